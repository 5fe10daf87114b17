"""Recordings of what monitors saw: written live, replayed, reported on."""
