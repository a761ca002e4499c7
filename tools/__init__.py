"""Instruments to rehearse and test with, not part of a run: the fault proxy and the mock LSL rig."""
