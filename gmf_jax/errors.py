"""The one error type for bad user input (config keys, names, files)."""


class ConfigError(ValueError):
  """Bad user input, raised before any compute starts.

  The message is one line naming the key, value or file and how to fix it; the CLI prints it
  without a traceback and exits with status 2.
  """
