"""Tables and figures of the paper from metrics and benchmark files (`salt report`)."""
