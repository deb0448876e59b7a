"""A tiny sweep shared by the end-to-end tests (6 configs, one shape group)."""


def tiny_sweep(steps: int) -> str:
    return f"""
[base]
d = 5
m = 6
L = 3
K = 8
steps = {steps}
log_every = 10

[grid]
ratio = [0.5, 1.0]
seed = [0, 1, 2]
"""
