"""The demo wing: the shipped Animal-MNIST weights and their card (:mod:`.assets`), the demo report
(:mod:`.report`, what ``arpg demo`` writes), retraining the weights end to end (:mod:`.retrain`), and the
measurements of the demo model (:mod:`.classifier`, :mod:`.quality`, :mod:`.seams`)."""
