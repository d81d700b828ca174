"""The lot's controllers: the lane shell (runs the lane machine's effects), occupancy and
sessions. They take inputs from the drivers and the plate reader and write to the journal.
"""
