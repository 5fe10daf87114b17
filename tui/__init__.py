"""The Textual monitor (issue 4): it shows the fleet state, it does not compute it."""
