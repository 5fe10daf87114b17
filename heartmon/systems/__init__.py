"""The experiment, grown to real systems: the same probes, run through real Celery
workers and real Inngest SDK workers, measured on heartmon's clock beside heartmon's
own agents (``heartmon matrix --systems``). Also the small worker apps it starts, which
the integration tests start too.
"""
