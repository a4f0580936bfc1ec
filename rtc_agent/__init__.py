"""rtc-agent: a WebRTC media server for speech-to-speech Realtime agents."""


class ConfigError(ValueError):
    """A setting that cannot be used as given: `rtc-agent` prints the message as one
    line on stderr and exits with status 2, without a traceback.

    It lives at the package's root, which imports nothing, so every command may
    raise it and `cli.py` may catch it without loading a subcommand. A ValueError,
    so callers that caught the bad values before still do."""
