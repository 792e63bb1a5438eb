"""Diffusion schedules and solvers, kept apart from the networks (as diffusers does)."""
from .schedule import DiscreteVPSchedule, cosine_betas
from .dpm_solver import DPMSolverPP, SolverStats
from .flow_euler import FlowEulerSampler
from .guidance import ThreeWayGuidance
from .windows import TemporalWindows, WindowedNoise

__all__ = ["DiscreteVPSchedule", "cosine_betas", "DPMSolverPP", "SolverStats", "ThreeWayGuidance", "FlowEulerSampler",
           "TemporalWindows", "WindowedNoise"]
