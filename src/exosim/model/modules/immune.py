"""Tumour volume and the immune arm of systemic scenarios (docs/model.md section 3.5).

Tumour (per tumour population; volumes in mL)::

    dX/dt = (r*(1 - V/V_max) - kill)*X            tumour_expansion, X(0) = 1
    V     = V0*X*(1 - Z)                          tumour_volume: living cells, doomed or not
    V_c   = V0*X*SF                               clonogenic_volume
    kill  = e*E*s,  s = 1/(1 + f_cp*c_PD/K_PD)    immune_kill_rate, checkpoint_suppression

Immune arm (one per scenario; reads the vesicular tumour dsDNA ``c_DNA`` of its medium)::

    dA/dt = k_DC*(c_DNA/(c_DNA + K_DNA) - A)      dc_activation: STING-activated share of DCs
    dE/dt = k_T*A - k_E*E                         effector_t_cells

``SF`` and ``Z`` are the population's surviving fraction (repair module) and dead share
(release module), which follow the plated cohort of cells through irradiation, repair,
misrepair and the death of the doomed.  Growth and immune kill act on every living cell
alike, so the clonogenic volume is ``V0*SF*X`` exactly, jumps of ``SF`` at acute doses
included; doomed cells keep their volume (and attempt divisions) until they die.  Without
treatment and immune arm ``V`` is the logistic curve from ``V0`` (test); after an acute dose
and in exponential growth the volume regrows a delay ``-ln(SF)/r`` behind the untreated one.

Exosomes of irradiated tumour cells carry dsDNA that dendritic cells sense through
cGAS/STING, which primes CD8+ T cells against the irradiated and unirradiated (abscopal)
tumours (Diamond et al. 2018); exosomal PD-L1 of each tumour suppresses the T cells there
(Chen et al. 2018; Poggio et al. 2019), and PD-L1 blockade (``checkpoint_factor``) lifts
it.  The T-cell and growth constants are those of the radiotherapy-immunity model of
Kosinsky et al. 2018 (in the spirit of Serre et al. 2016).

A tumour population's release scales with its expansion ``X`` (a growing tumour releases
more); its uptake keeps its plated number (module ``transport``).

References
----------
.. [1] Kosinsky Y, et al. (2018) Radiation and PD-(L)1 treatment combinations: immune response
   and dose optimization via a predictive systems model. J Immunother Cancer 6:17.
   doi:10.1186/s40425-018-0327-9
.. [2] Serre R, et al. (2016) Mathematical modeling of cancer immunotherapy and its synergy with
   radiotherapy. Cancer Res 76:4931. doi:10.1158/0008-5472.CAN-15-3567
.. [3] Diamond JM, et al. (2018) Exosomes shuttle TREX1-sensitive IFN-stimulatory dsDNA from
   irradiated cancer cells to DCs. Cancer Immunol Res 6:910. doi:10.1158/2326-6066.CIR-17-0581
.. [4] Chen G, et al. (2018) Exosomal PD-L1 contributes to immunosuppression and is associated
   with anti-PD-1 response. Nature 560:382. doi:10.1038/s41586-018-0392-8
.. [5] Poggio M, et al. (2019) Suppression of exosomal PD-L1 induces systemic anti-tumor
   immunity and memory. Cell 177:414. doi:10.1016/j.cell.2019.02.016
"""

from __future__ import annotations

from exosim.model.declare import SEP, Block, Rate, Rule, State

#: namespace of the immune arm's symbols
IMMUNE = "immune"


def tumour(population: str, medium: str, checkpoint_ligands: list[str], immune: bool) -> Block:
    """Volume of tumour population ``population``, killed by the immune arm's T cells if ``immune``."""
    m = f"{medium}{SEP}"
    block = Block(
        module="immune",
        namespace=population,
        parameters={
            "tumour_initial_volume": "tumour_initial_volume",
            "tumour_growth_rate": "tumour_growth_rate",
            "tumour_max_volume": "tumour_max_volume",
        },
        context={"population": population},
        states=[State("tumour_expansion", "1", "growth and immune-kill multiplier of the tumour, X", initial="1")],
        rules=[
            Rule(
                "tumour_volume",
                "tumour_initial_volume*tumour_expansion*(1 - dead_share)",
                "mL",
                "tumour volume: living cells, doomed or not",
            ),
            Rule(
                "clonogenic_volume",
                "tumour_initial_volume*tumour_expansion*surviving_fraction",
                "mL",
                "volume of the tumour's clonogenic (surviving) cells",
            ),
        ],
    )
    growth = "tumour_growth_rate*(1 - tumour_volume/tumour_max_volume)"
    if immune:
        block.parameters.update(
            {
                "t_cell_kill_rate": "t_cell_kill_rate",
                "checkpoint_factor": "checkpoint_factor",
                "pdl1_half_suppression": "pdl1_half_suppression",
            }
        )
        pdl1 = " + ".join(f"{m}{c}_vesicular" for c in checkpoint_ligands) or "0"
        block.rules += [
            Rule(
                "checkpoint_suppression",
                f"1/(1 + checkpoint_factor*({pdl1})/{m}volume/pdl1_half_suppression)",
                "1",
                "share of T-cell killing left by the exosomal PD-L1 in the tumour's medium, s",
            ),
            Rule(
                "immune_kill_rate",
                f"t_cell_kill_rate*{IMMUNE}{SEP}effector_t_cells*checkpoint_suppression",
                "1/h",
                "rate at which effector T cells clear the tumour's living cells",
            ),
        ]
        growth += " - immune_kill_rate"
    block.rates = [Rate("tumour_expansion", f"({growth})*tumour_expansion")]
    return block


def immune(medium: str, sting_agonists: list[str]) -> Block:
    """Dendritic cells sensing tumour dsDNA in ``medium`` and the effector T cells they prime."""
    m = f"{medium}{SEP}"
    dna = " + ".join(f"{m}{c}_vesicular" for c in sting_agonists)
    return Block(
        module="immune",
        namespace=IMMUNE,
        parameters={
            "dc_activation_rate": "dc_activation_rate",
            "sting_half_saturation": "sting_half_saturation",
            "t_cell_influx_rate": "t_cell_influx_rate",
            "t_cell_elimination_rate": "t_cell_elimination_rate",
        },
        context={"immune": medium},
        states=[
            State("dc_activation", "1", "share of dendritic cells activated through cGAS/STING, A", scale=0.1),
            State("effector_t_cells", "cells", "effector T cells primed against the tumours, E", scale=100.0),
        ],
        rules=[
            Rule(
                "dsdna_concentration",
                f"({dna})/{m}volume",
                "copies/mL",
                "vesicular tumour dsDNA the dendritic cells sense",
            ),
            Rule(
                "sting_stimulus",
                "dsdna_concentration/(dsdna_concentration + sting_half_saturation)",
                "1",
                "saturating STING stimulus of the dendritic cells",
            ),
        ],
        rates=[
            Rate("dc_activation", "dc_activation_rate*(sting_stimulus - dc_activation)"),
            Rate("effector_t_cells", "t_cell_influx_rate*dc_activation - t_cell_elimination_rate*effector_t_cells"),
        ],
    )
