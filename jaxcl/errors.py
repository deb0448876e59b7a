"""The one error type of bad input, shared by the engine, the experiments and the maths."""


class ConfigError(ValueError):
    """A configuration field has a bad value; the message names the field and the value."""
