"""The ODE modules of docs/model.md section 3, each declared once.

* :mod:`.release` - donor damage drives secretion and cargo loading (3.1)
* :mod:`.transport` - medium, binding, internalisation, escape (3.2)
* :mod:`.cargo_effects` - cytosolic cargo, targets and phenotype modifiers (3.3)
* :mod:`.repair` - DSBs, lethal lesions, apoptosis, survival (3.4, 4)
* :mod:`.immune` - tumour volume and the immune arm of systemic scenarios (3.5)

Each module function returns a :class:`exosim.model.declare.Block`; the assembler
(:mod:`exosim.model.assemble`) joins them into one model used both by the
vectorised simulator and the SBML export.
"""

from exosim.model.modules.cargo_effects import cargo_effects
from exosim.model.modules.immune import IMMUNE, immune, tumour
from exosim.model.modules.release import release
from exosim.model.modules.repair import ACUTE_DOSE, repair
from exosim.model.modules.transport import medium, medium_link, uptake

__all__ = [
    "release",
    "medium",
    "medium_link",
    "uptake",
    "cargo_effects",
    "repair",
    "tumour",
    "immune",
    "IMMUNE",
    "ACUTE_DOSE",
]
