"""Word-substitution attacks equal to TextAttack's TextFooler, PWWS, TextBugger and (Robust Tickets') BAE recipes."""

from .recipes import ATTACKS, RECIPES, AttackOptions, attack_for, build_attack, paper_sample_size, sample_indices
from .report import comparison_table, summarize, summary_table, textattack_summary, write_textattack_outputs
from .runner import read_results, run_attack
from .search import AttackResult, GreedyWordSwapWIR
from .wordnet import WordNet
from .wrapper import HFClassifier

__all__ = [
    "ATTACKS", "AttackOptions", "AttackResult", "GreedyWordSwapWIR", "HFClassifier", "RECIPES", "WordNet",
    "attack_for", "build_attack",
    "comparison_table", "paper_sample_size", "read_results", "run_attack", "sample_indices", "summarize",
    "summary_table", "textattack_summary", "write_textattack_outputs",
]
