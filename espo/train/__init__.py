"""The step: one rollout (prompts -> rewarded completions) and one update (μ optimiser steps), and what they use.

Stage functions take the collaborators they use (policy, sampler, task, objective, optimiser), never the module.
"""
