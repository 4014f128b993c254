"""The stop-word lists of TextAttack's recipes; a stop word is never replaced (StopwordModification).

Matching is exact, as in TextAttack (`word not in stopwords`, no lower-casing): "The" at the start of a sentence
is attackable, "the" is not.

* `TEXTFOOLER_STOP_WORDS` (266 words): the list TextFoolerJin2019 passes to StopwordModification
  (textattack/attack_recipes/textfooler_jin_2019.py, copied there from the TextFooler release).
* `NLTK_STOP_WORDS` (179 words): `nltk.corpus.stopwords.words("english")`, StopwordModification's default, used
  by PWWSRen2019, TextBuggerLi2018 and BAEGarg2019 (textattack/constraints/pre_transformation/
  stopword_modification.py).
"""

from __future__ import annotations

TEXTFOOLER_STOP_WORDS: frozenset[str] = frozenset("""
a about above across after afterwards again against ain all almost alone along already also although am among
amongst an and another any anyhow anyone anything anyway anywhere are aren aren't around as at back been before
beforehand behind being below beside besides between beyond both but by can cannot could couldn couldn't d didn
didn't doesn doesn't don don't down due during either else elsewhere empty enough even ever everyone everything
everywhere except first for former formerly from hadn hadn't hasn hasn't haven haven't he hence her here hereafter
hereby herein hereupon hers herself him himself his how however hundred i if in indeed into is isn isn't it it's its
itself just latter latterly least ll may me meanwhile mightn mightn't mine more moreover most mostly must mustn
mustn't my myself namely needn needn't neither never nevertheless next no nobody none noone nor not nothing now
nowhere o of off on once one only onto or other others otherwise our ours ourselves out over per please s same shan
shan't she she's should've shouldn shouldn't somehow something sometime somewhere such t than that that'll the their
theirs them themselves then thence there thereafter thereby therefore therein thereupon these they this those
through throughout thru thus to too toward towards under unless until up upon used ve was wasn wasn't we were weren
weren't what whatever when whence whenever where whereafter whereas whereby wherein whereupon wherever whether which
while whither who whoever whole whom whose why with within without won won't would wouldn wouldn't y yet you you'd
you'll you're you've your yours yourself yourselves
""".split())

NLTK_STOP_WORDS: frozenset[str] = frozenset("""
i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him his
himself she she's her hers herself it it's its itself they them their theirs themselves what which who whom this
that that'll these those am is are was were be been being have has had having do does did doing a an the and but if
or because as until while of at by for with about against between into through during before after above below to
from up down in out on off over under again further then once here there when where why how all any both each few
more most other some such no nor not only own same so than too very s t can will just don don't should should've now
d ll m o re ve y ain aren aren't couldn couldn't didn didn't doesn doesn't hadn hadn't hasn hasn't haven haven't isn
isn't ma mightn mightn't mustn mustn't needn needn't shan shan't shouldn shouldn't wasn wasn't weren weren't won
won't wouldn wouldn't
""".split())
