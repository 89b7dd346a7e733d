"""The objective-behaviour suite: small probes with a known optimum, each isolating one ability of an objective.

``espo suite`` (``espo.tools.suite.cli``) runs objectives on the probes (``probes``, ``tasks``) over seeds
through ``espo fit`` (``run``), records per-step curves and the policy's drift (``recorder``), and reports
steps to 90 % of the optimum, final reward, drawdown, final KL, drift and seconds with 95 % t-intervals over
seeds (``metrics``, ``report``). See docs/suite.md.
"""
