"""The Textual monitor: it draws frozen views of the fleet, it does not compute them."""
