"""What flows between nodes: the wire format, the clock and the transports. The only place bytes are made."""
