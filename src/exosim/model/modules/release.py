"""Exosome release and cargo loading by one cell population (docs/model.md section 3.1).

Equations (per cell)::

    dP/dt = k_act*DSB - k_off*P                       secretion drive
    dM/dt = k_ilv*f_ilv*(1 + E_rel*H(P) + e_h*X) - (k_fuse*f_fuse + k_lys)*M
    J     = k_fuse*f_fuse*M                            particles/cell/h
    q_j   = q_j0*(1 + E_j*H(P) + e_hj*X)               copies/particle
    H(x)  = x^n/(K^n + x^n)
    X     = (h(p) - h(p_ref))/(1 - h(p_ref)),  h(p) = K_h^n_h/(K_h^n_h + p^n_h)

``X`` is hypoxia signalling (HIF-1-like) at the cells' pO2 ``p``: 0 in standard culture
(``p_ref``), 1 in anoxia, half-maximal near 1.5-2 % O2 (Jiang et al. 1996).  Hypoxic cells
release more vesicles (King et al. 2012) and load hypoxia-enriched cargo (``e_hj`` per cargo).

``k_ilv`` is set so that the unperturbed release equals the measured baseline
secretion rate; ``f_ilv`` and ``f_fuse`` are 1 until an intervention (GW4869,
Rab27a knockdown) lowers them.  Every population runs this module; only the
cargo a population packages (``packaged``) is loaded into its vesicles.

References
----------
.. [1] Yu X, Harris SL, Levine AJ (2006) The regulation of exosome secretion: a
   novel function of the p53 protein. Cancer Res 66:4795. doi:10.1158/0008-5472.CAN-05-4579
.. [2] Jabbari N, et al. (2019) Ionizing radiation increases the activity of
   exosomal secretory pathway in MCF-7 human breast cancer cells. Int J Mol Sci
   20:3649. doi:10.3390/ijms20153649
.. [3] Wang Y, et al. (2017) (exosome release kinetics) J Control Release 268:147.
.. [4] Kundrat P, Friedland W (2015) Radiat Prot Dosim 166:148. doi:10.1093/rpd/ncv174
.. [5] King HW, Michael MZ, Gleadle JM (2012) Hypoxic enhancement of exosome release by breast
   cancer cells. BMC Cancer 12:421. doi:10.1186/1471-2407-12-421
.. [6] Jiang BH, Semenza GL, Bauer C, Marti HH (1996) Hypoxia-inducible factor 1 levels vary
   exponentially over a physiologically relevant range of O2 tension. Am J Physiol
   271:C1172. doi:10.1152/ajpcell.1996.271.4.C1172
"""

from __future__ import annotations

from exosim.model.declare import SEP, Block, Derived, Rate, Rule, State


def release(population: str, medium: str, packaged: list[str], cargos: list[str]) -> Block:
    """Secretion drive, MVB pool, release flux and cargo loading of ``population``.

    Parameters
    ----------
    population : population namespace
    medium : namespace of the medium the population releases into
    packaged : cargo species this population loads into its vesicles
    cargos : all cargo species of the model (medium states exist for each)
    """
    m = f"{medium}{SEP}"
    block = Block(
        module="release",
        namespace=population,
        parameters={
            "cells": "cells",
            "secretion_drive_per_dsb": "secretion_drive_per_dsb",
            "secretion_drive_decay_rate": "secretion_drive_decay_rate",
            "secretion_drive_half_saturation": "secretion_drive_half_saturation",
            "secretion_drive_hill": "secretion_drive_hill",
            "baseline_release_rate": "baseline_release_rate",
            "mvb_fusion_rate": "mvb_fusion_rate",
            "mvb_degradation_rate": "mvb_degradation_rate",
            "release_radiation_enhancement": "release_radiation_enhancement",
            "ilv_formation_factor": "ilv_formation_factor",
            "fusion_factor": "fusion_factor",
            "hif_half_pressure": "hif_half_pressure",
            "hif_hill": "hif_hill",
            "release_hypoxia_enhancement": "release_hypoxia_enhancement",
        },
        context={"population": population},
        states=[
            State("secretion_drive", "1", "p53/TSAP6-like secretion drive P", scale=1.0),
            State(
                "mvb_pool",
                "particles/cell",
                "intraluminal vesicles in multivesicular bodies",
                scale=100.0,
                initial="ilv_formation_rate*(1 + release_hypoxia_enhancement*hypoxia_signal)"
                "/(mvb_fusion_rate + mvb_degradation_rate)",
            ),
        ],
        derived=[
            Derived(
                "hypoxia_signal",
                "(hill(hif_half_pressure, oxygen_pressure, hif_hill)"
                " - hill(hif_half_pressure, reference_oxygen_pressure, hif_hill))"
                "/(1 - hill(hif_half_pressure, reference_oxygen_pressure, hif_hill))",
                "1",
                "X: HIF-1-like hypoxia signalling, 0 in standard culture and 1 in anoxia",
            ),
            Derived(
                "ilv_formation_rate",
                "baseline_release_rate*(mvb_fusion_rate + mvb_degradation_rate)/mvb_fusion_rate",
                "particles/cell/h",
                "ILV formation k_ilv giving the baseline release at steady state",
            ),
        ],
        rules=[
            Rule(
                "secretion_activation",
                "hill(secretion_drive, secretion_drive_half_saturation, secretion_drive_hill)",
                "1",
                "H(P): saturating activation of secretion and loading",
            ),
            Rule(
                "release_flux",
                "mvb_fusion_rate*fusion_factor*mvb_pool",
                "particles/cell/h",
                "exosome release per cell J",
            ),
        ],
        rates=[
            Rate("secretion_drive", "secretion_drive_per_dsb*dsb - secretion_drive_decay_rate*secretion_drive"),
            Rate(
                "mvb_pool",
                "ilv_formation_rate*ilv_formation_factor"
                "*(1 + release_radiation_enhancement*secretion_activation + release_hypoxia_enhancement*hypoxia_signal)"
                " - (mvb_fusion_rate*fusion_factor + mvb_degradation_rate)*mvb_pool",
            ),
            Rate(f"{m}vesicles", "cells*release_flux"),
            Rate(f"{m}released_particles", "cells*release_flux"),
        ],
    )
    for c in packaged:
        block.parameters.update(
            {
                f"{c}_copies_per_particle": "copies_per_particle",
                f"{c}_loading_enhancement": "loading_radiation_enhancement",
                f"{c}_hypoxic_loading": "loading_hypoxia_enhancement",
                f"{c}_free_release_rate": "free_release_rate",
            }
        )
        for local in (
            f"{c}_copies_per_particle",
            f"{c}_loading_enhancement",
            f"{c}_hypoxic_loading",
            f"{c}_free_release_rate",
        ):
            block.param_context[local] = {"cargo": c}
        block.rules += [
            Rule(
                f"{c}_loading",
                f"{c}_copies_per_particle"
                f"*(1 + {c}_loading_enhancement*secretion_activation + {c}_hypoxic_loading*hypoxia_signal)",
                "copies/particle",
                f"{c} copies per released vesicle",
            ),
            Rule(
                f"{c}_free_release",
                f"{c}_free_release_rate"
                f"*(1 + {c}_loading_enhancement*secretion_activation + {c}_hypoxic_loading*hypoxia_signal)",
                "copies/cell/h",
                f"non-vesicular {c} release per cell",
            ),
        ]
        block.rates += [
            Rate(f"{m}{c}_vesicular", f"cells*release_flux*{c}_loading"),
            Rate(f"{m}{c}_released", f"cells*(release_flux*{c}_loading + {c}_free_release)"),
            Rate(f"{m}{c}_free", f"cells*{c}_free_release"),
        ]
    return block
