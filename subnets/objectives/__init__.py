"""Robust objectives: adversarial perturbers (FreeLB, PGD, RoAST), debiasing losses and bias models."""

from .adversaries import ADVERSARIES
from .adversaries.freelb import FreeLB
from .adversaries.pgd import PGD, PGDArguments
from .adversaries.roast import RoASTAdversaryArguments, RoASTPerturbation
from .arguments import ObjectiveArguments, build_loss, build_objective, objective_arguments
from .context import AdversaryContext, DebiasContext
from .debiasing import DEBIAS_LOSSES
from .debiasing.conf_reg import TeacherPredictionArguments, conf_reg_loss
from .debiasing.poe import poe_loss
from .debiasing.reweight import reweight_loss
from .losses import LossObjective, cross_entropy, symmetric_kl
from .perturbers import AscentArguments, PerturbationConfig
from .predictions import BiasPredictionArguments, PredictionCache, dataset_fingerprint

__all__ = [
    "ADVERSARIES", "AdversaryContext", "AscentArguments", "BiasPredictionArguments", "DEBIAS_LOSSES", "DebiasContext",
    "FreeLB", "LossObjective", "ObjectiveArguments", "PGD", "PGDArguments", "PerturbationConfig", "PredictionCache",
    "RoASTAdversaryArguments", "RoASTPerturbation", "TeacherPredictionArguments", "build_loss", "build_objective",
    "conf_reg_loss", "cross_entropy", "dataset_fingerprint", "objective_arguments", "poe_loss", "reweight_loss",
    "symmetric_kl",
]
