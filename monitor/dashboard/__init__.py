"""``spikewire dashboard``: a live session (or a recorded one) in the browser, read as an outside observer
(the nodes' output ports and /metrics, the session's status log), drawn from the network's declared ports,
populations and devices (never a kind's name)."""
