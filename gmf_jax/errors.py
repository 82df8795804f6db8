"""The errors a run reports to its user (imported without the training stack)."""


class ConfigError(ValueError):
  """Bad user input, raised before any compute starts.

  The message is one line naming the key, value or file and how to fix it; the CLI prints it
  without a traceback and exits with status 2.
  """


class NonFiniteError(RuntimeError):
  """Training produced NaN or Inf; the message names the step and the metric."""
