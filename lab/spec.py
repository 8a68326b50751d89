"""The experiment file: a typed, validated spec (CONTRACT.md, "Experiment file").

One experiment = deployment + load profile + call scenarios + seed. Every default
is defined here, once; unknown keys, wrong types and out-of-range values are
errors that name the dotted key path (``deployment.trunk.channels: must be an
integer > 0, got -3``). Both backends take the same :class:`Experiment`.
"""

from __future__ import annotations

import ipaddress
import math
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    PlainSerializer,
    Tag,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from lab.dists import Dist, DistError
from lab.errors import SpecError as SpecError  # re-exported: the spec's error


def _to_dist(value: Any, info: ValidationInfo) -> Dist:
    base = (info.context or {}).get("base_dir")
    try:
        return Dist.parse(value, base)
    except DistError as exc:
        raise ValueError(str(exc)) from exc


DistField = Annotated[
    Dist, BeforeValidator(_to_dist), PlainSerializer(lambda d: d.to_yaml(), return_type=Any)
]
PosInt = Annotated[int, Field(gt=0, strict=True)]
NonNegInt = Annotated[int, Field(ge=0, strict=True)]
PosFloat = Annotated[float, Field(gt=0.0, allow_inf_nan=False)]
NonNegFloat = Annotated[float, Field(ge=0.0, allow_inf_nan=False)]
Fraction = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]


class Strict(BaseModel):
    """Base of every spec section: unknown keys are errors, objects are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)


# ---------------------------------------------------------------------------- load
class PoissonArrivals(Strict):
    kind: Literal["poisson"]
    rate_cps: PosFloat


class ConstantArrivals(Strict):
    kind: Literal["constant"]
    rate_cps: PosFloat


class RampArrivals(Strict):
    kind: Literal["ramp"]
    start_cps: NonNegFloat
    end_cps: NonNegFloat
    ramp_s: PosFloat | None = None  # None: the ramp spans duration_s
    poisson: bool = True


class Step(Strict):
    at_s: NonNegFloat
    rate_cps: NonNegFloat


class StepsArrivals(Strict):
    kind: Literal["steps"]
    steps: Annotated[list[Step], Field(min_length=1)]
    poisson: bool = True


class BurstArrivals(Strict):
    kind: Literal["burst"]
    base_cps: NonNegFloat
    burst_cps: NonNegFloat
    start_s: NonNegFloat
    duration_s: PosFloat
    poisson: bool = True


# Hourly shape of a business-hours inbound contact centre (fraction of the peak hour);
# a typical two-hump weekday curve (late morning and early afternoon peaks).
DEFAULT_DIURNAL = (
    0.05, 0.03, 0.02, 0.02, 0.03, 0.06, 0.15, 0.35, 0.65, 0.90, 1.00, 0.95,
    0.80, 0.90, 0.95, 0.85, 0.70, 0.50, 0.35, 0.25, 0.18, 0.12, 0.08, 0.06,
)  # fmt: skip


class DiurnalArrivals(Strict):
    kind: Literal["diurnal"]
    peak_cps: PosFloat
    hourly: Annotated[list[Fraction], Field(min_length=24, max_length=24)] = list(
        DEFAULT_DIURNAL
    )
    period_s: PosFloat = 86400.0  # one "day"; shrink it to compress the day into a short run
    poisson: bool = True


class ReplayArrivals(Strict):
    kind: Literal["replay"]
    file: str
    column: str = "start_s"
    speed: PosFloat = 1.0


Arrivals = Annotated[
    PoissonArrivals
    | ConstantArrivals
    | RampArrivals
    | StepsArrivals
    | BurstArrivals
    | DiurnalArrivals
    | ReplayArrivals,
    Field(discriminator="kind"),
]


class MixEntry(Strict):
    scenario: str
    weight: PosFloat = 1.0


class Sources(Strict):
    count: PosInt = 1
    cidr: str = "198.51.100.0/24"  # RFC 5737 TEST-NET-2: documentation addresses

    @model_validator(mode="after")
    def _fits(self) -> Sources:
        try:
            net = ipaddress.ip_network(self.cidr, strict=False)
        except ValueError as exc:
            raise ValueError(f"@cidr: not a network: {self.cidr!r}") from exc
        if self.count > net.num_addresses:
            raise ValueError(f"@count: {self.count} sources do not fit in {self.cidr}")
        return self


class Attack(Strict):
    kind: Literal["invite_flood", "register_bruteforce", "scanner"]
    source_ip: str
    rate_rps: PosFloat
    start_s: NonNegFloat = 0.0
    duration_s: PosFloat = 60.0


class Load(Strict):
    arrivals: Arrivals = Field(default_factory=lambda: PoissonArrivals(kind="poisson", rate_cps=1))
    mix: Annotated[list[MixEntry], Field(min_length=1)] = Field(
        default_factory=lambda: [MixEntry(scenario="talk")]
    )
    sources: Sources = Field(default_factory=Sources)
    attacks: list[Attack] = Field(default_factory=list)


# ---------------------------------------------------------------------------- scenarios
class BargeIn(Strict):
    """A caller interrupts the agent's reply: with ``probability`` per turn, the caller
    starts speaking ``after_s`` into the reply (if the reply is still playing); the agent
    stops talking when its VAD hears the caller, and the next turn starts then."""

    probability: Fraction
    after_s: DistField = Field(default_factory=lambda: Dist.parse(1.5))


class Scenario(Strict):
    hold_s: DistField = Field(
        default_factory=lambda: Dist.parse({"dist": "exponential", "mean": 180})
    )
    turns: NonNegInt | DistField = 0
    caller_speech_s: DistField = Field(
        default_factory=lambda: Dist.parse({"dist": "lognormal", "median": 2.5, "p95": 6})
    )
    agent_speech_s: DistField = Field(
        default_factory=lambda: Dist.parse({"dist": "lognormal", "median": 4, "p95": 10})
    )
    barge_in: BargeIn | None = None  # callers who talk over long agent replies
    # An explicit call script (None: talk for hold_s, or hold `turns` AI turns). Each
    # step is a one-key mapping; see ScriptStep.
    script: Annotated[list[ScriptStep], Field(min_length=1)] | None = None


DTMF_DIGITS = r"^[0-9*#A-D]+$"


class TalkStep(Strict):
    """Both parties talk (or listen) for ``talk_s``."""

    talk_s: DistField


class TurnsStep(Strict):
    """``turns`` AI conversation turns with the scenario's speech lengths."""

    turns: NonNegInt | DistField


class DtmfStep(Strict):
    """Send DTMF digits (RFC 4733 telephone-events); the IVR answers with a prompt."""

    dtmf: Annotated[str, Field(pattern=DTMF_DIGITS)]
    prompt_s: DistField = Field(default_factory=lambda: Dist.parse(3.0))


class MessageStep(Strict):
    """Send an in-dialog SIP MESSAGE (RFC 3428) with this text; the agent answers 200."""

    message: Annotated[str, Field(min_length=1, max_length=1300)]


class OnHoldStep(Strict):
    """Put the agent on hold (re-INVITE, a=sendonly) for ``on_hold_s``, then resume."""

    on_hold_s: DistField


class TransferStep(Strict):
    """Blind transfer (RFC 3515 REFER) to ``transfer``; the call goes on with the target."""

    transfer: Annotated[str, Field(pattern=r"^sips?:\S+$")]
    talk_s: DistField = Field(default_factory=lambda: Dist.parse(0.0))


_STEP_MODELS: dict[str, type[Strict]] = {
    "talk_s": TalkStep, "turns": TurnsStep, "dtmf": DtmfStep, "message": MessageStep,
    "on_hold_s": OnHoldStep, "transfer": TransferStep,
}


def _step_kind(value: Any) -> str | None:
    """The tag of a script step: its one defining key."""
    if isinstance(value, Strict):
        return next(f"step:{k}" for k, m in _STEP_MODELS.items() if isinstance(value, m))
    if isinstance(value, dict):
        keys = [k for k in _STEP_MODELS if k in value]
        if len(keys) == 1 and not (keys == ["talk_s"] and "transfer" in value):
            return f"step:{keys[0]}"
        if "transfer" in value:
            return "step:transfer"
    return None


ScriptStep = Annotated[
    Annotated[TalkStep, Tag("step:talk_s")] | Annotated[TurnsStep, Tag("step:turns")]
    | Annotated[DtmfStep, Tag("step:dtmf")] | Annotated[MessageStep, Tag("step:message")]
    | Annotated[OnHoldStep, Tag("step:on_hold_s")]
    | Annotated[TransferStep, Tag("step:transfer")],
    Discriminator(_step_kind, custom_error_type="script_step",
                  custom_error_message="a step is a mapping with exactly one of "
                  + ", ".join(_STEP_MODELS)),
]


# ---------------------------------------------------------------------------- deployment
class Burst(Strict):
    """Bursty RTP loss: a Gilbert–Elliott two-state Markov chain (see twin/media.py).

    Give either ``mean_burst_packets`` (the chain is then the simple Gilbert model,
    loss 0 in Good and 1 in Bad, scaled so that the mean loss is ``network.loss``), or
    the chain itself as Linux netem's ``loss gemodel p r 1-h 1-k`` does: ``p_gb``
    (Good → Bad per packet), ``p_bg`` (Bad → Good), ``loss_good`` and ``loss_bad``
    (loss probability in each state). In that second form the chain alone sets the
    RTP loss and ``network.loss`` stays the loss of SIP messages.
    """

    mean_burst_packets: Annotated[float, Field(ge=1.0, allow_inf_nan=False)] | None = None
    p_gb: Fraction | None = None
    p_bg: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] | None = None
    loss_good: Fraction = 0.0
    loss_bad: Fraction = 1.0

    @model_validator(mode="after")
    def _one_form(self) -> Burst:
        chain = self.p_gb is not None or self.p_bg is not None
        if self.mean_burst_packets is not None and chain:
            raise ValueError("@mean_burst_packets: give either mean_burst_packets or "
                             "p_gb and p_bg, not both")
        if self.mean_burst_packets is None and (self.p_gb is None or self.p_bg is None):
            raise ValueError("@p_gb: give mean_burst_packets, or both p_gb and p_bg")
        return self


class Network(Strict):
    """The caller-side path to the proxy, each direction.

    ``burst`` (default None: independent, random loss) makes RTP loss bursty.
    """

    delay_ms: NonNegFloat = 0.0
    jitter_ms: NonNegFloat = 0.0
    loss: Fraction = 0.0
    burst: Burst | None = None

    @model_validator(mode="after")
    def _burst_fits(self) -> Network:
        b = self.burst
        if b is not None and b.mean_burst_packets is not None:
            # Gilbert model: p_bg = 1/L, p_gb = loss·p_bg/(1 − loss) must be a probability
            top = b.mean_burst_packets / (b.mean_burst_packets + 1.0)
            if self.loss > top:
                raise ValueError(f"@loss: a mean loss of {self.loss} cannot come in bursts of "
                                 f"{b.mean_burst_packets:g} packets (at most {top:.4g})")
        return self


class Sip(Strict):
    """RFC 3261 transport and timers (section 17: T1, T2, Timer B = 64*T1)."""

    transport: Literal["udp", "tcp", "tls"] = "udp"
    t1_ms: PosFloat = 500.0
    t2_ms: PosFloat = 4000.0


class Trunk(Strict):
    channels: PosInt = 100
    cps_limit: PosFloat | None = None


class RateControl(Strict):
    """RFC 7415 rate-based overload control: the senders throttle initial INVITEs.

    The senders together keep the RFC's leaky bucket (section 7.3) at ``limit_cps``
    with a tolerance ``tau_s`` (TAU, the burst it lets through); an INVITE that does
    not fit is refused by its sender (``503``, ``rejected_by: proxy.overload_control``)
    and never reaches the proxy. The real backend has Kamailio's ``ratelimit``
    module (TAILDROP, 1 s interval) answer the excess with ``503`` and Retry-After.
    """

    kind: Literal["rate"]
    limit_cps: PosFloat
    tau_s: NonNegFloat = 1.0


class LossControl(Strict):
    """RFC 7339 loss-based overload control: the proxy tells senders what fraction to drop.

    Every ``interval_ms`` the proxy takes the mean queueing delay ``q`` of the messages
    that reached it and scales the fraction ``a`` of new calls the senders let through
    (an occupancy-style controller, as in Shen, Schulzrinne & Nahum 2008): ``a`` times
    ``target_delay_ms / q``, that factor kept in ``[1/max_step, max_step]`` and ``a`` in
    ``[1 - max_loss, 1]``; the senders refuse the others at random
    (``rejected_by: proxy.overload_control``), as the Via ``oc`` parameter asks them to.
    """

    kind: Literal["loss"]
    target_delay_ms: PosFloat = 50.0
    interval_ms: PosFloat = 100.0
    max_step: Annotated[float, Field(gt=1.0, allow_inf_nan=False)] = 1.25
    max_loss: Fraction = 0.99


OverloadControl = Annotated[RateControl | LossControl, Field(discriminator="kind")]


class Proxy(Strict):
    """The SIP proxy's workers, their cost per message and its overload behaviour.

    ``reject_cost`` (a 503 the proxy generates) and ``retransmission_cost`` (a
    retransmitted request its transaction layer absorbs) are multiples of
    ``service_ms``: Shen, Schulzrinne & Nahum (2008) measured that rejecting a call
    costs about as much as serving it, and RFC 6357 that late answers draw
    retransmissions which add load exactly when the proxy is saturated -- the
    congestion collapse of SIP over UDP. ``overload_control`` (None: none) is
    :class:`RateControl` (RFC 7415) or :class:`LossControl` (RFC 7339).
    """

    workers: PosInt = 8
    service_ms: NonNegFloat = 0.0  # per SIP message, per worker
    # Messages waiting for a worker beyond which a new INVITE is answered 503
    # (in-dialog requests and responses are always queued).
    queue_limit: PosInt | None = 1000
    reject_cost: NonNegFloat = 1.0
    retransmission_cost: NonNegFloat = 1.0
    overload_control: OverloadControl | None = None


class Agent(Strict):
    """The answering agent. ``kind`` picks the real backend's agent: ``sipp`` answers and
    waits for BYE (cheap, pure signalling load), ``voice`` really listens and replies
    (real/voice_agent.py: VAD, STT, TTS, DTMF, MESSAGE, REFER), ``auto`` = ``voice`` when
    a scenario has AI turns or feature steps, else ``sipp``. The twin ignores it."""

    answer_ms: NonNegFloat = 0.0  # INVITE at the agent -> 200 OK (180 Ringing is sent at once)
    kind: Literal["auto", "sipp", "voice"] = "auto"


class Relay(Strict):
    """An rtpengine-like RTP relay: CPU per relayed call, in percent of one core.

    A call costs ``call_cost_pct``; ``transcode_cost_pct`` more when the two legs use
    different codecs, and ``resample_cost_pct`` more when their sample rates differ
    (8 kHz ↔ 16/24/48 kHz). ``max_utilization`` keeps head-room (1 = every cycle).
    """

    cores: PosInt
    call_cost_pct: PosFloat
    transcode_cost_pct: NonNegFloat = 0.0
    resample_cost_pct: NonNegFloat = 0.0
    max_utilization: Annotated[float, Field(gt=0.0, le=1.0, allow_inf_nan=False)] = 1.0


MediaCodec = Literal["G711", "G711U", "G711A", "G722", "G729A", "OPUS"]


class Media(Strict):
    """The RTP path of a call: codec, packetisation, jitter buffer, link and relay.

    ``jitter_buffer`` is ``fixed`` (playout at the first packet's delay plus
    ``jitter_buffer_ms``) or ``adaptive`` (Ramjee et al. 1994, starting at
    ``jitter_buffer_ms``). ``agent_codec`` is the codec on the relay's AI-agent leg
    (None: the caller's codec, no transcoding). ``link_kbps`` (None: unlimited) is the
    caller-side link, per direction, at the Ethernet layer; ``relay`` (None: no limit)
    the relay's CPU.
    """

    codec: MediaCodec = "G711"
    plc: bool = True
    ptime_ms: PosInt = 20
    jitter_buffer_ms: NonNegFloat = 40.0
    jitter_buffer: Literal["fixed", "adaptive"] = "fixed"
    agent_codec: MediaCodec | None = None
    link_kbps: PosFloat | None = None
    relay: Relay | None = None


def _lognormal(median: float, p95: float) -> Any:
    return lambda: Dist.parse({"dist": "lognormal", "median": median, "p95": p95})


# Default AI latencies, each from a published figure (read 2026-11; providers change):
# they describe a typical cascaded agent on commercial APIs, not any one vendor.
# ``concurrency: null`` everywhere: provider stream caps depend on your plan — e.g. Deepgram
# pay-as-you-go allows up to 50 concurrent streaming STT requests and 15 concurrent Aura TTS
# requests (developers.deepgram.com/reference/api-rate-limits, checked 2026-11): set them.


class Stt(Strict):
    """Streaming STT: end of speech (after endpointing) → final transcript."""

    # median 120 ms: Deepgram Voice Agent LatencyReport example, stt_latency 0.12 s
    # (developers.deepgram.com/docs/voice-agent-latency-report); p95 350 ms: a
    # LiveKit + Deepgram nova-3 trace with transcription p50 0.36 s (PyPI: apresvous).
    latency_ms: DistField = Field(default_factory=_lognormal(120, 350))
    concurrency: PosInt | None = None
    rate_limit_rpm: PosFloat | None = None  # requests per minute before 429 + retry


class Llm(Strict):
    """The LLM: time to first token, then ``tokens`` streamed at ``tokens_per_s``."""

    # median 400 / p95 1000 ms: GPT-4o p50 250 / p95 700 ms, Claude Sonnet 4.6 200 / 500,
    # DeepSeek V3 400 / 1,200 (deploybase.ai TTFT comparison, March 2026); hourly probes of
    # 15 frontier models found medians from 321 ms to 4.2 s (jonathanwrede.de, 2026).
    ttft_ms: DistField = Field(default_factory=_lognormal(400, 1000))
    tokens: DistField = Field(default_factory=lambda: Dist.parse(60))  # a spoken reply
    tokens_per_s: PosFloat = 80.0  # mid-range API output speed (same sources: 44-235 tok/s)
    concurrency: PosInt | None = None
    rate_limit_rpm: PosFloat | None = None


class Tts(Strict):
    """Streaming TTS: first text in → first audio byte out."""

    # median 150 / p95 300 ms: ElevenLabs Flash ~75 ms and Turbo ~300 ms (elevenlabs.io
    # docs, models overview); Cartesia sonic-3 p50 138 / p90 174 ms in the apresvous trace.
    ttfb_ms: DistField = Field(default_factory=_lognormal(150, 300))
    concurrency: PosInt | None = None
    rate_limit_rpm: PosFloat | None = None


class Ai(Strict):
    """The agent's turn loop; ``vad_ms`` is the endpointing silence after the caller stops."""

    # median 500 / p95 800 ms: LiveKit Agents endpointing min_delay default 500 ms
    # (docs.livekit.io, turn handling options), OpenAI Realtime server_vad
    # silence_duration_ms 500 (platform docs), Pipecat/Silero VAD stop_secs 0.8 s
    # (docs.pipecat.ai, speech input).
    vad_ms: DistField = Field(default_factory=_lognormal(500, 800))
    # a provider over its rate limit answers 429; the agent retries after an exponential
    # backoff with full jitter (retry k waits U(0, base·2^k)), at most max_retries times
    retry_base_ms: PosFloat = 250.0
    max_retries: NonNegInt = 5
    stt: Stt = Field(default_factory=Stt)
    llm: Llm = Field(default_factory=Llm)
    tts: Tts = Field(default_factory=Tts)


class Pike(Strict):
    sampling_time_unit_s: PosFloat = 2.0
    reqs_density_per_unit: PosInt = 30
    remove_latency_s: PosFloat = 4.0


class Security(Strict):
    pike: Pike | None = None
    allowlist: list[str] | None = None
    digest_auth: bool = False
    per_user_calls_per_min: PosFloat | None = None


class Deployment(Strict):
    network: Network = Field(default_factory=Network)
    sip: Sip = Field(default_factory=Sip)
    trunk: Trunk = Field(default_factory=Trunk)
    proxy: Proxy = Field(default_factory=Proxy)
    agent: Agent = Field(default_factory=Agent)
    media: Media = Field(default_factory=Media)
    ai: Ai = Field(default_factory=Ai)
    security: Security = Field(default_factory=Security)


#: The longest run: 31 days (the per-second time series then has 2.7 M rows).
MAX_DURATION_S = 31 * 86400.0


class Real(Strict):
    """Settings of the real backend; the caps keep a real run bounded (``--force`` lifts them)."""

    target: Literal["local"] = "local"
    max_calls: PosInt = 500
    max_duration_s: PosFloat = 600.0
    max_concurrent: PosInt = 40  # pjsua2 carries 4 calls per process: 10 UAC processes
    sip_port: Annotated[int, Field(gt=0, le=65535, strict=True)] = 5060


class Experiment(Strict):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+$")] = "experiment"
    seed: NonNegInt = 1
    duration_s: Annotated[float, Field(gt=0.0, le=MAX_DURATION_S, allow_inf_nan=False)] = 3600.0
    warmup_s: NonNegFloat = 0.0
    replications: PosInt = 1
    load: Load = Field(default_factory=Load)
    scenarios: dict[str, Scenario] = Field(default_factory=lambda: {"talk": Scenario()})
    deployment: Deployment = Field(default_factory=Deployment)
    pricebook: str = "default"
    real: Real = Field(default_factory=Real)

    @model_validator(mode="after")
    def _consistent(self) -> Experiment:
        if self.warmup_s >= self.duration_s:
            raise ValueError(
                f"@warmup_s: must be less than duration_s ({self.duration_s}), got {self.warmup_s}"
            )
        for i, entry in enumerate(self.load.mix):
            if entry.scenario not in self.scenarios:
                raise ValueError(
                    f"@load.mix.{i}.scenario: unknown scenario '{entry.scenario}'"
                    f" (defined: {sorted(self.scenarios)})"
                )
        return self


# ---------------------------------------------------------------------------- loading
def load_experiment(
    path: str | Path, overrides: list[str] | None = None, **top: Any
) -> Experiment:
    """Read, override (``a.b.c=VALUE``) and validate an experiment file.

    Raises
    ------
    SpecError
        With a one-line message naming the key path.
    """
    path = Path(path)
    data = read_yaml_mapping(path, "experiment")
    for item in overrides or []:
        apply_override(data, item)
    for key, value in top.items():
        if value is not None:
            data[key] = value
    return validate(data, base_dir=path.parent)


def _load_unique(text: str, path: list[str]) -> Any:
    """``yaml.safe_load(text)``, refusing a key given twice: the text is parsed once,
    its node tree checked, then turned into Python objects."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _unique_keys(node, path)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _unique_keys(node: yaml.Node | None, path: list[str]) -> None:
    """Refuse a key given twice in one mapping (PyYAML would silently keep the last)."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in seen:
                raise SpecError(".".join([*path, key]),
                                f"given twice (lines {seen[key]} and {line}); give it once")
            seen[key] = line
            _unique_keys(value_node, [*path, key])
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _unique_keys(item, [*path, str(i)])


def read_yaml_mapping(path: Path, what: str) -> dict[str, Any]:
    """A YAML file that must hold one non-empty mapping with each key given once.

    Every other case is bad input (:class:`SpecError`, one line): no such path, a
    directory, unreadable, not YAML, empty, a list or scalar, a duplicated key."""
    if path.is_dir():
        raise SpecError("", f"{what} file {path} is a directory, not a YAML file")
    if not path.is_file():
        raise SpecError("", f"{what} file not found: {path}")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError("", f"{path}: cannot read the {what} file: "
                        f"{getattr(exc, 'strerror', None) or exc}") from exc
    try:
        data = _load_unique(text, [])
    except yaml.YAMLError as exc:
        raise SpecError("", f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if data is None:
        raise SpecError("", f"{path}: the {what} file is empty (write at least `name: ...`)")
    if not isinstance(data, dict):
        raise SpecError("", f"{path}: the {what} must be a YAML mapping, got a "
                        f"{type(data).__name__}")
    return data


def validate(data: dict[str, Any], base_dir: Path | None = None) -> Experiment:
    """Validate a plain mapping; bad input raises SpecError naming the first bad key."""
    try:
        return Experiment.model_validate(data, context={"base_dir": base_dir or Path.cwd()})
    except ValidationError as exc:
        raise _spec_error(exc) from None


def apply_override(data: dict[str, Any], item: str) -> None:
    """Apply one ``--set a.b.c=VALUE`` (VALUE is a YAML scalar) to a raw mapping."""
    if "=" not in item:
        raise SpecError(item, "--set needs KEY=VALUE")
    key, raw = item.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise SpecError(key, "not a dotted key path")
    try:
        value = _load_unique(raw, [key.strip()])
    except yaml.YAMLError as exc:
        raise SpecError(key, f"value is not a YAML scalar: {raw!r}") from exc
    node: Any = data
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise SpecError(".".join(parts[: i + 1]), "cannot set a key inside a non-mapping")
        node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(node, list) and last.isdigit() and int(last) < len(node):
        node[int(last)] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError(key, "cannot set a key inside a non-mapping")


def _member(part: str) -> bool:
    """A location part pydantic adds for a union's member (``constrained-int``), not a key."""
    return part.startswith(("constrained-", "function-", "is-instance[", "nullable[")) or \
        part in ("int", "float", "str", "bool", "none")


def _spec_error(exc: ValidationError) -> SpecError:
    errors = exc.errors(include_url=False)
    err = errors[0]
    loc = [str(p) for p in err["loc"]]
    if loc and _member(loc[-1]):
        # a union (``turns: int | DIST``): a mapping was meant as the DIST, anything else
        # as the number; report the member the input was meant for, at the key's own path
        same = [e for e in errors if [str(p) for p in e["loc"]][:-1] == loc[:-1]]
        if isinstance(err.get("input"), dict):
            err = next((e for e in same if str(e["loc"][-1]).startswith("function-")), err)
    loc = [str(p) for p in err["loc"] if not _member(str(p))]
    # Drop the discriminator tags pydantic adds for tagged unions (load.arrivals.poisson.rate_cps).
    if len(loc) >= 3 and loc[:2] == ["load", "arrivals"] and err["type"] != "union_tag_invalid":
        loc = loc[:2] + loc[3:]
    if "overload_control" in loc[:-1] and err["type"] != "union_tag_invalid":  # its tag, too
        i = loc.index("overload_control") + 1
        loc = loc[:i] + loc[i + 1:]
    loc = [p for p in loc if not p.startswith("step:")]
    kind, ctx, got = err["type"], err.get("ctx") or {}, err.get("input")
    msg = str(err["msg"]).removeprefix("Value error, ")
    if kind == "script_step":
        return SpecError(".".join(loc), msg)
    if kind == "extra_forbidden":
        return SpecError(".".join(loc), "unknown key")
    if kind == "missing":
        return SpecError(".".join(loc), "required key is missing")
    if kind == "union_tag_invalid":
        return SpecError(".".join([*loc, "kind"]), f"unknown kind {ctx.get('tag')!r}"
                         f" (expected one of {ctx.get('expected_tags')})")
    if kind == "union_tag_not_found":
        return SpecError(".".join([*loc, "kind"]), "required key is missing")
    if kind in ("greater_than", "greater_than_equal", "less_than_equal", "less_than"):
        op, bound = {"greater_than": (">", "gt"), "greater_than_equal": (">=", "ge"),
                     "less_than_equal": ("<=", "le"), "less_than": ("<", "lt")}[kind]
        limit = ctx.get(bound)
        what = "an integer" if isinstance(limit, int) else "a number"
        return SpecError(".".join(loc), f"must be {what} {op} {limit:.15g}, got {got!r}")
    if kind == "string_pattern_mismatch":
        return SpecError(".".join(loc), f"must match {ctx.get('pattern')}, got {got!r}")
    simple = {"int": "an integer", "float": "a number", "finite_number": "a finite number",
              "bool": "true or false", "string": "a string", "dict_type": "a mapping",
              "model_type": "a mapping", "model_attributes_type": "a mapping",
              "list_type": "a list"}
    for prefix, what in simple.items():
        if kind.startswith(prefix):
            return SpecError(".".join(loc), f"must be {what}, got {got!r}")
    if kind == "literal_error":
        return SpecError(".".join(loc), f"must be one of {ctx.get('expected')}, got {got!r}")
    if msg.startswith("@") and ": " in msg:
        # a model validator naming its own key, relative to the model's location
        sub, problem = msg[1:].split(": ", 1)
        return SpecError(".".join([*loc, sub]), problem)
    return SpecError(".".join(loc), msg)


def dump_resolved(exp: Experiment) -> str:
    """The experiment with every default filled in, as YAML."""
    data = exp.model_dump(mode="python")
    return yaml.safe_dump(_plain(data), sort_keys=False)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, float) and math.isinf(value):
        return None
    return value


def unsupported_features(exp: Experiment) -> list[tuple[str, str]]:
    """Keys that validate but that no backend models yet: (key path, reason).

    A run refuses these rather than silently ignoring them.
    """
    out: list[tuple[str, str]] = []
    sec = exp.deployment.security
    for key in ("pike", "allowlist", "per_user_calls_per_min"):
        if getattr(sec, key) is not None:
            out.append((f"deployment.security.{key}", "the security layer is not modelled yet"))
    if sec.digest_auth:
        out.append(("deployment.security.digest_auth", "the security layer is not modelled yet"))
    if exp.load.attacks:
        out.append(("load.attacks", "attack traffic is not modelled yet"))
    return out
