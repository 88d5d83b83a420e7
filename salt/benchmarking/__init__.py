"""The machinery behind `salt bench`: process settings, limits, measurement and isolation."""
