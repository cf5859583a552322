"""Batching policies: pure decision objects shared by the simulator and the real engine.

Importing the package registers every policy: each module below runs its @register decorator.
A new policy is one module in this folder plus one line here (docs/POLICIES.md).
"""

# The policies, one module each: importing them runs their @register decorators.
from batchsim.policies import continuous, dynamic, hybrid, shortest_prompt, static
from batchsim.policies.base import Plan, Policy, StepEvents, StepShape, Wait
from batchsim.policies.registry import available, get_policy, make_config, register

__all__ = [
    "Plan",
    "Policy",
    "StepEvents",
    "StepShape",
    "Wait",
    "available",
    "continuous",
    "dynamic",
    "get_policy",
    "hybrid",
    "make_config",
    "register",
    "shortest_prompt",
    "static",
]
