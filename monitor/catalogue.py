"""Every metric spikewire exports, in one place: names, types, help and labels.

Names follow Prometheus conventions: the ``spikewire_`` prefix, base units (seconds, ohms, hertz),
``_total`` for counters. Labels are bounded by the network file (nodes, ports, links, devices and
populations are declared there; per-neuron series only for populations of at most
``PER_NEURON_MAX`` neurons), never by traffic. The exporter, the Grafana dashboard and the alert rules
are all generated from this table, so they cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from spikewire.core.histogram import PROM_BOUNDS

PER_NEURON_MAX = 16


@dataclass(frozen=True)
class Metric:
    name: str
    type: Literal["counter", "gauge", "histogram"]
    help: str
    labels: tuple[str, ...]

    @property
    def sample(self) -> str:
        """The series name PromQL sees (counters carry ``_total`` in the name here already)."""
        return self.name


def _m(name, type_, help_, *labels) -> Metric:
    return Metric(name, type_, help_, ("node", *labels))


NODE_UP = _m("spikewire_node_up", "gauge", "1 while the node's loop runs.", "kind", "site")
NODE_READY = _m("spikewire_node_ready", "gauge", "1 once the node has compiled its kernels and every link joined.", "kind")
SPIKES = _m("spikewire_spikes_total", "counter", "Spikes emitted by a population (biological: action potentials).",
            "population")
NEURON_SPIKES = _m("spikewire_neuron_spikes_total", "counter",
                   f"Spikes per neuron, for populations of at most {PER_NEURON_MAX} neurons.", "population", "neuron")
RATE = _m("spikewire_population_rate_hertz", "gauge", "Mean rate per neuron over the last status interval.",
          "population")
BIO_EVENTS = _m("spikewire_bio_events_total", "counter", "Typed biological events (psp, stimulated_ap, spontaneous_ap).",
                "type")
LATENCY = _m("spikewire_link_latency_seconds", "histogram", "Receive time minus send time of each packet on a link.",
             "link")
SENT = _m("spikewire_link_packets_sent_total", "counter",
          "Packets published on an output port (loop probes included; they are packets on the link).", "port")
SEND_DROPS = _m("spikewire_link_send_dropped_total", "counter", "Packets dropped at a full send queue.", "port")
RECEIVED = _m("spikewire_link_packets_received_total", "counter", "Packets received on a link.", "link")
EVENTS = _m("spikewire_link_events_received_total", "counter", "Events received on a link.", "link")
GAPS = _m("spikewire_link_sequence_gaps_total", "counter", "Packets missing from a link's sequence (lost).", "link")
REORDERED = _m("spikewire_link_out_of_order_total", "counter", "Packets that arrived after a later one.", "link")
MALFORMED = _m("spikewire_link_malformed_total", "counter", "Packets dropped as malformed, by reason.", "link", "reason")
CLOCK_OFFSET = _m("spikewire_link_clock_offset_seconds", "gauge",
                  "Sender's clock minus ours, NTP-style estimate (inter-site links; 0 within a site).", "link")
RTT = _m("spikewire_link_rtt_seconds", "gauge", "Round-trip time of the link's lowest-delay recent clock exchange.",
         "link")
LINK_UP = _m("spikewire_link_up", "gauge", "1 while the link's sender is heard (data or heartbeats).", "link")
OUTAGES = _m("spikewire_link_outages_total", "counter", "Times the link's sender fell silent past peer_timeout.", "link")
DOWNTIME = _m("spikewire_link_downtime_seconds_total", "counter", "Seconds the link has been down.", "link")
RESTARTS = _m("spikewire_link_peer_restarts_total", "counter", "Times the link's sender restarted.", "link")
LATE = _m("spikewire_link_late_total", "counter", "Packets past their jitter-buffer delivery time, by action "
          "(dropped, delivered).", "link", "action")
BUFFERED = _m("spikewire_link_jitter_buffered", "gauge", "Packets waiting in the link's jitter buffer.", "link")
REFUSED = _m("spikewire_connections_refused_total", "counter",
             "Connections refused: CURVE key not allowed, mechanism mismatch, protocol error, not ZMTP.", "reason")
INTERLOCK = _m("spikewire_interlock_held", "gauge", "1 while the safety interlock holds stimulation and programming.")
HOLDS = _m("spikewire_interlock_holds_total", "counter", "Times the safety interlock engaged.")
HELD_EVENTS = _m("spikewire_interlock_held_events_total", "counter",
                 "Stimulus events and programming pulses not carried out because of the interlock.")
TICK_COMPUTE = _m("spikewire_tick_compute_seconds", "histogram",
                  "Compute time of one model tick (ticks recomputed after a compute-ahead rollback count too).")
LAG = _m("spikewire_loop_lag_seconds", "histogram", "How late the loop woke for a due tick or output.")
TICKS = _m("spikewire_ticks_total", "counter", "Model ticks committed (published at their deadline).")
OVERRUNS = _m("spikewire_tick_overruns_total", "counter", "Ticks whose output left more than one tick late.")
ROLLBACKS = _m("spikewire_lookahead_rollbacks_total", "counter", "Compute-ahead batches rolled back by input.")
RESISTANCE = _m("spikewire_memristor_resistance_ohms", "gauge", "Resistance of a memristive device.", "device")
PULSES = _m("spikewire_plasticity_pulses_total", "counter", "Programming pulses applied, by direction.",
            "device", "direction")
PROBE_LATENCY = _m("spikewire_probe_latency_seconds", "histogram",
                   "Round trip of a loop probe through every node of the loop back to its origin.")
PROBES_LOST = _m("spikewire_probes_lost_total", "counter", "Loop probes sent that never came back.")
REJECTED = _m("spikewire_events_rejected_total", "counter", "Events a node refused (bad ids, values), by reason.",
              "reason")

RIG_UP = _m("spikewire_rig_up", "gauge", "1 while a biological node's recording rig is streaming to it.")
RIG_DISCONNECTS = _m("spikewire_rig_disconnects_total", "counter", "Times the rig's stream went away.")
RIG_SAMPLES = _m("spikewire_rig_samples_total", "counter", "Samples received from the rig.")
STIM_SENT = _m("spikewire_rig_stimuli_sent_total", "counter", "Stimulation commands sent to the rig.")
STIM_HELD = _m("spikewire_rig_stimuli_held_total", "counter",
               "Stimuli held back (never sent) because the rig was down.")
STIM_READY = _m("spikewire_rig_stim_ready", "gauge",
                "1 while the rig's stimulation stream has a consumer (stimuli are sent only then, and while the rig "
                "is up).")
STIM_NO_CONSUMER = _m("spikewire_rig_stimuli_held_no_consumer_total", "counter",
                      "Stimuli held back (never sent) because nothing subscribed to the stimulation stream.")
STIM_REFUSED = _m("spikewire_rig_stimuli_refused_total", "counter",
                  "Stimuli refused (never sent) by the rig's hard limits, by reason (amplitude, width, rate).", "reason")
RIG_UNUSABLE = _m("spikewire_rig_streams_unusable_total", "counter",
                  "Streams matching the rig's query that could not be used, by reason (channel_count, irregular_rate, "
                  "format, open_failed, pull_failed); each stream counted once.", "reason")

OUT_OF_RANGE = _m("spikewire_link_out_of_range_total", "counter",
                  "Events refused before the model saw them: a value outside the input port's plausible range.", "link")
DUPLICATES = _m("spikewire_link_duplicates_total", "counter",
                "Packets refused because their sequence number was delivered before (a repeat or a rewind).", "link")
UNSYNCED = _m("spikewire_link_unsynced_total", "counter",
              "Packets delivered untimed: the sender's clock offset was not known yet (no latency, no jitter "
              "buffer).", "link")
JOINS_REFUSED = _m("spikewire_link_joins_refused_total", "counter",
                   "Subscriber join notices refused on an output port (a bad name, or past the port's bound).", "port")

SESSION_ELAPSED = _m("spikewire_session_elapsed_seconds", "gauge",
                     "Seconds since the session's common start (t0) by the node's clock; 0 until it starts. With "
                     "the network file's protocol it says which phase runs.")
RIG_CALIBRATED = _m("spikewire_rig_calibrated", "gauge",
                    "1 once the rig's spike detector has measured every channel's noise level (no detection "
                    "before; it calibrates again after the rig reconnects).")

CATALOGUE: tuple[Metric, ...] = (
    NODE_UP, NODE_READY, SPIKES, NEURON_SPIKES, RATE, BIO_EVENTS, LATENCY, SENT, SEND_DROPS, RECEIVED, EVENTS, GAPS,
    REORDERED, MALFORMED, CLOCK_OFFSET, RTT, LINK_UP, OUTAGES, DOWNTIME, RESTARTS, LATE, BUFFERED, REFUSED,
    INTERLOCK, HOLDS, HELD_EVENTS, TICK_COMPUTE, LAG, TICKS, OVERRUNS, ROLLBACKS, RESISTANCE, PULSES,
    PROBE_LATENCY, PROBES_LOST, REJECTED, RIG_UP, RIG_DISCONNECTS, RIG_SAMPLES, STIM_SENT, STIM_HELD,
    STIM_READY, STIM_NO_CONSUMER, STIM_REFUSED, RIG_UNUSABLE, OUT_OF_RANGE, DUPLICATES, UNSYNCED, JOINS_REFUSED,
    SESSION_ELAPSED, RIG_CALIBRATED,
)
HISTOGRAM_BUCKETS = PROM_BOUNDS
