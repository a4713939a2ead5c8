"""The four ODE modules of docs/model.md section 3, each declared once.

* :mod:`.release` - donor damage drives secretion and cargo loading (3.1)
* :mod:`.transport` - medium, binding, internalisation, escape (3.2)
* :mod:`.cargo_effects` - cytosolic cargo, targets and phenotype modifiers (3.3)
* :mod:`.repair` - DSBs, lethal lesions, apoptosis, survival (3.4, 4)

Each module function returns a :class:`exosim._declare.Block`; the assembler
(:mod:`exosim._assemble`) joins them into one model used both by the
vectorised simulator and the SBML export.
"""

from .cargo_effects import cargo_effects
from .release import release
from .repair import ACUTE_DOSE, repair
from .transport import medium, medium_link, uptake

__all__ = ["release", "medium", "medium_link", "uptake", "cargo_effects", "repair", "ACUTE_DOSE"]
