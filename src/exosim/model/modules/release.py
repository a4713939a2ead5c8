"""Exosome release and cargo loading by one cell population (docs/model.md section 3.1).

Equations (per cell)::

    dP/dt = k_act*DSB - k_off*P                       secretion drive
    dM/dt = k_ilv*f_ilv*(1 + E_rel*H(P)) - (k_fuse*f_fuse + k_lys)*M
    J     = k_fuse*f_fuse*M                            particles/cell/h
    q_j   = q_j0*(1 + E_j*H(P))                        copies/particle
    H(x)  = x^n/(K^n + x^n)

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
        },
        context={"population": population},
        states=[
            State("secretion_drive", "1", "p53/TSAP6-like secretion drive P", scale=1.0),
            State(
                "mvb_pool",
                "particles/cell",
                "intraluminal vesicles in multivesicular bodies",
                scale=100.0,
                initial="ilv_formation_rate/(mvb_fusion_rate + mvb_degradation_rate)",
            ),
        ],
        derived=[
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
                "*(1 + release_radiation_enhancement*secretion_activation)"
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
                f"{c}_free_release_rate": "free_release_rate",
            }
        )
        for local in (f"{c}_copies_per_particle", f"{c}_loading_enhancement", f"{c}_free_release_rate"):
            block.param_context[local] = {"cargo": c}
        block.rules += [
            Rule(
                f"{c}_loading",
                f"{c}_copies_per_particle*(1 + {c}_loading_enhancement*secretion_activation)",
                "copies/particle",
                f"{c} copies per released vesicle",
            ),
            Rule(
                f"{c}_free_release",
                f"{c}_free_release_rate*(1 + {c}_loading_enhancement*secretion_activation)",
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
