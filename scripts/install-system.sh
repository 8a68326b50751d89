#!/usr/bin/env bash
# Install the system programs of siplab's real loopback backend: Kamailio (the SIP
# proxy under test), SIPp (Debian package `sip-tester`) and eSpeak NG (`espeak-ng`, the
# voice agent's text to speech and the callers' spoken prompts).
#
# - Both present: nothing to do.
# - Missing, running as root with apt-get: install them from Debian/Ubuntu.
# - Otherwise: print one line and exit 0; the tests marked `real` will skip.
#   When the environment variable CI is set (and not "false"/"0"), a failed
#   install is an error instead (exit 1): CI must exercise the real backend.
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/usr/local/sbin/$1" ]; }

missing=()
have kamailio || missing+=(kamailio)
have sipp || missing+=(sipp)
have espeak-ng || missing+=(espeak-ng)
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-system: kamailio, sipp and espeak-ng found"
    exit 0
fi

if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "install-system: installing kamailio sip-tester espeak-ng with apt-get (missing: ${missing[*]})"
    if apt-get update -qq &&
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kamailio sip-tester espeak-ng &&
        have kamailio && have sipp && have espeak-ng; then
        exit 0
    fi
    reason="apt-get install kamailio sip-tester espeak-ng failed"
else
    reason="need root and apt-get to install them"
fi

msg="install-system: ${missing[*]} not available ($reason); real loopback tests will skip"
case "${CI:-}" in
    "" | false | 0)
        echo "$msg"
        exit 0
        ;;
    *)
        echo "$msg — error because CI is set" >&2
        exit 1
        ;;
esac
