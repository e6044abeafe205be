"""Live updates: stream positions, the Server-Sent Events wire, and what each stream sends."""
