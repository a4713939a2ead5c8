"""Exosome release and cargo loading by one cell population (docs/model.md section 3.1).

Equations (per cell)::

    dP/dt = k_act*DSB - k_off*P                       secretion drive
    dM/dt = k_ilv*f_ilv*(1 + E_rel*H(P) + e_h*X) - (k_fuse*f_fuse + k_lys)*M
    J     = k_fuse*f_fuse*M                            particles/cell/h
    q_j   = q_j0*(1 + E_j*H(P) + e_hj*X + e_Lj*L)      copies/particle
    dW/dt = k_z*pos(1 - SF - W - Z) - k_z*W             doomed cells past their first stage
    dZ/dt = k_z*W                                       share of the cells that have died
    medium gains N*((1 - Z)*J + b_z*dZ/dt) vesicles
    H(x)  = x^n/(K^n + x^n)
    X     = (h(p) - h(p_ref))/(1 - h(p_ref)),  h(p) = K_h^n_h/(K_h^n_h + p^n_h)

``L`` is the cell's lethal lesions (repair module): cargo from damaged chromatin (tumour dsDNA,
which sits in micronuclei formed from misrepaired breaks; Harding et al. 2017) loads in
proportion to them for as long as the cell lives (``e_Lj``, 0 for every other cargo).

Free release may follow a modifier of the releasing cells (cargo catalogue
``free_release_with``): the TNF-alpha/NO secretome of macrophages scales with their M1
polarisation.

``X`` is hypoxia signalling (HIF-1-like) at the cells' pO2 ``p``: 0 in standard culture
(``p_ref``), 1 in anoxia, half-maximal near 1.5-2 % O2 (Jiang et al. 1996).  Hypoxic cells
release more vesicles (King et al. 2012) and load hypoxia-enriched cargo (``e_hj`` per cargo).

Doomed cells stop secreting when they die: the share ``1 - SF`` of a population that will
not survive (its surviving fraction, repair module) dies through two stages at ``k_z`` each,
a mean time ``2/k_z`` after the damage (``doomed_cell_death_time``; most cells attempt one
or more divisions and die by mitotic catastrophe, few by early apoptosis: Eriksson &
Stigbrand 2010), so donor release falls with donor survival after a lag, and each dying cell sheds a burst of ``b_z``
vesicles with its current cargo loading (apoptotic vesicles, Poon et al. 2019).  Uptake by
the population keeps its plated number (corpses still bind vesicles), which keeps the
particle balance exact.

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
.. [7] Eriksson D, Stigbrand T (2010) Radiation-induced cell death mechanisms. Tumour Biol
   31:363. doi:10.1007/s13277-010-0042-8
.. [8] Poon IKH, et al. (2019) Moving beyond size and phosphatidylserine exposure: evidence
   for a diversity of apoptotic cell-derived extracellular vesicles in vitro. J Extracell
   Vesicles 8:1608786. doi:10.1080/20013078.2019.1608786
.. [9] Harding SM, et al. (2017) Mitotic progression following DNA damage enables pattern
   recognition within micronuclei. Nature 548:466. doi:10.1038/nature23470
"""

from __future__ import annotations

from exosim.model.declare import SEP, Block, Derived, Rate, Rule, State


def release(
    population: str,
    medium: str,
    packaged: list[str],
    cargos: list[str],
    tumour: bool = False,
    lesion_loaded: tuple[str, ...] = (),
    free_release_with: dict[str, str] | None = None,
) -> Block:
    """Secretion drive, MVB pool, release flux and cargo loading of ``population``.

    Parameters
    ----------
    population : population namespace
    medium : namespace of the medium the population releases into
    packaged : cargo species this population loads into its vesicles
    cargos : all cargo species of the model (medium states exist for each)
    tumour : the population is a tumour whose living cells expand (module ``immune``): its
        release scales with the expansion
    lesion_loaded : cargo whose loading also rises with the cell's lethal lesions (tumour
        dsDNA from micronuclei)
    free_release_with : cargo -> modifier of the population (cargo module) its free release
        is proportional to (the secretome of M1-polarised macrophages)
    """
    free_release_with = free_release_with or {}
    # the cells the population's shares refer to: the plated number, grown by a tumour's expansion
    cohort = "cells*tumour_expansion" if tumour else "cells"
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
            "doomed_cell_death_time": "doomed_cell_death_time",
            "dying_cell_burst": "dying_cell_burst",
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
            State("dying_share", "1", "share of the cells doomed and past their first stage of dying, W", scale=0.1),
            State("dead_share", "1", "share of the population's cells that have died, Z", scale=0.1),
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
            Derived(
                "doomed_cell_death_rate",
                "2/doomed_cell_death_time",
                "1/h",
                "k_z: rate of each of the two stages of dying",
            ),
        ],
        rules=[
            Rule(
                "death_flux",
                "doomed_cell_death_rate*dying_share",
                "1/h",
                "share of the population's cells dying per hour",
            ),
            Rule(
                "secreting_cells",
                f"{cohort}*(1 - dead_share)",
                "cells",
                "cells still alive and secreting",
            ),
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
            Rule(
                "vesicle_output",
                f"secreting_cells*release_flux + {cohort}*dying_cell_burst*death_flux",
                "particles/h",
                "vesicles the population adds to its medium: living cells' release and dying cells' bursts",
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
            Rate(
                "dying_share",
                "doomed_cell_death_rate*pos(1 - surviving_fraction - dying_share - dead_share) - death_flux",
            ),
            Rate("dead_share", "death_flux"),
            Rate(f"{m}vesicles", "vesicle_output"),
            Rate(f"{m}released_particles", "vesicle_output"),
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
        lesions = ""
        if c in lesion_loaded:
            block.parameters[f"{c}_lesion_loading"] = "loading_per_lethal_lesion"
            block.param_context[f"{c}_lesion_loading"] = {"cargo": c}
            lesions = f" + {c}_lesion_loading*lethal_lesions"
        block.rules += [
            Rule(
                f"{c}_loading",
                f"{c}_copies_per_particle"
                f"*(1 + {c}_loading_enhancement*secretion_activation + {c}_hypoxic_loading*hypoxia_signal{lesions})",
                "copies/particle",
                f"{c} copies per released vesicle",
            ),
            Rule(
                f"{c}_free_release",
                f"{c}_free_release_rate"
                f"*(1 + {c}_loading_enhancement*secretion_activation + {c}_hypoxic_loading*hypoxia_signal)"
                + (f"*{free_release_with[c]}" if c in free_release_with else ""),
                "copies/cell/h",
                f"non-vesicular {c} release per cell",
            ),
        ]
        block.rates += [
            Rate(f"{m}{c}_vesicular", f"vesicle_output*{c}_loading"),
            Rate(
                f"{m}{c}_released",
                f"vesicle_output*{c}_loading + secreting_cells*{c}_free_release",
            ),
            Rate(f"{m}{c}_free", f"secreting_cells*{c}_free_release"),
        ]
    return block
