"""The demo wing: the shipped Animal-MNIST weights and their card (:mod:`.assets`), the demo report
(:mod:`.report`, what ``arpg demo`` writes), retraining the weights end to end (:mod:`.retrain`), and the
measurements of the demo model (:mod:`.classifier`, :mod:`.quality`, :mod:`.seams`); the text-to-image demo's
scenes and caption grammar (:mod:`.scenes`), its retraining (:mod:`.t2i_retrain`) and its GenEval-style judge
(:mod:`.t2i_quality`, with its classifier in :mod:`.t2i_classifier`)."""
