"""Robust objectives: adversarial perturbers (FreeLB, PGD, RoAST), debiasing losses and bias models."""

from .adversaries import AscentArguments, PGDArguments, RoASTAdversaryArguments
from .arguments import (ADVERSARIES, DEBIAS_LOSSES, ObjectiveArguments, build_loss, build_objective,
                        objective_arguments)
from .debias import PredictionCache, conf_reg_loss, dataset_fingerprint, poe_loss, reweight_loss
from .debiasing import BiasPredictionArguments, TeacherPredictionArguments
from .losses import LossObjective, cross_entropy, symmetric_kl
from .perturbers import PGD, FreeLB, PerturbationConfig, RoASTPerturbation

__all__ = [
    "ADVERSARIES", "DEBIAS_LOSSES", "AscentArguments", "BiasPredictionArguments", "FreeLB", "LossObjective",
    "ObjectiveArguments", "PGD", "PGDArguments", "PerturbationConfig", "PredictionCache", "RoASTAdversaryArguments",
    "RoASTPerturbation", "TeacherPredictionArguments", "build_loss", "build_objective", "conf_reg_loss",
    "cross_entropy", "dataset_fingerprint", "objective_arguments", "poe_loss", "reweight_loss", "symmetric_kl",
]
