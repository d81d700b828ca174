"""The pure core: clock, events, plates, rights, tariff, access decisions, what a plate reader
gives a lane (reads) and the lane machine (lane_machine: an event and the time in, effects out).

No I/O and no event loop here: every function takes what it needs (the time included) and
returns values, so it is tested without mocks. The layers above import it; it imports none
of them (tests/test_architecture.py holds the rule).
"""
