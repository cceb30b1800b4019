"""algzu: a benchmark harness for mechanistic estimation on ARC's AlgZoo.

Can a model's accuracy be estimated from its weights as well as random sampling does, for
the same compute? algzu meters an estimator's FLOPs, scores its squared error over noisy
copies of the weights against sampling at equal compute, and reports MSE-vs-FLOPs curves.

The public API is deliberately small; everything else is internal.
"""

from algzu.errors import AlgzuError
from algzu.estimator import Estimator, get_estimator, register_estimator
from algzu.evaluate import Evaluation, evaluate
from algzu.model import Model, ModelSpec, forward
from algzu.noise import NoiseSpec, noisy_params
from algzu.suites import ModelCase, Suite, get_suite
from algzu.task import Task, get_task, register_task
from algzu.zoo import load_model

__version__ = "0.1.0"

__all__ = [
    "AlgzuError",
    "Estimator",
    "Evaluation",
    "Model",
    "ModelCase",
    "ModelSpec",
    "NoiseSpec",
    "Suite",
    "Task",
    "evaluate",
    "forward",
    "get_estimator",
    "get_suite",
    "get_task",
    "load_model",
    "noisy_params",
    "register_estimator",
    "register_task",
]
