"""Damage, repair and death of one cell population (docs/model.md sections 3.4 and 4).

Equations (per cell)::

    dDSB/dt = Y*O*Ddot + g - J - kappa*DSB^2                    all DSBs
    dDc/dt  = s_c*Y*O*Ddot - lambda_s*rho*Dc - kappa*DSB*Dc     complex DSBs (part of DSB)
    J       = rho*(lambda*(DSB - Dc) + lambda_s*Dc)             rejoining flux
    dL/dt   = Y_L*O*Ddot + (1 - phi)*J + kappa*DSB^2
    dA/dt   = gamma*a*DSB
    dLp/dt  = O*Ddot - k_p*g_F*Lp                  lipid peroxides (per Gy of yield)
    dF/dt   = gamma_F*Lp                           ferroptotic commitment
    dAu/dt  = k_u*pos(u - 1)                       autophagic commitment (lethal autophagy)
    dC/dt   = k_C*H(S; S*, n_C)                    bystander commitment of the susceptible cells
    H(S; S*, n_C)                                  bystander response (0: none, 1: responding)
    SF      = exp(-(L + A + F + Au))*(1 - f_s*(1 - exp(-C)))
    dX/dt   = g_b*H(S; S*, n_C) - lambda*rho*X                 lesions of responding bystander cells
    dM/dt   = k_f*(DSB + X - M) - J_M                          gamma-H2AX foci on open lesions
    dMc/dt  = k_f*(Dc - Mc) - r_c*Mc                           ... of them on complex DSBs
    dR/dt   = J_M - k_r*R                                      foci left on rejoined breaks
    J_M     = r*(M - Mc) + r_c*Mc,  r = lambda*rho + kappa*DSB,  r_c = lambda_s*rho + kappa*DSB
    foci    = M + R

Two repair classes (MEDRAS, McMahon et al. 2016): a share ``s_c`` of the breaks radiation makes
is complex and rejoined slowly at ``lambda_s`` (``slow_repair_share``, ``slow_repair_half_time``:
about 10 % of DSBs need the slow ATM/Artemis pathway, Riballo et al. 2004; slow half-times of
1.5-5.1 h in tumour lines, Nunez et al. 1995), the rest at the cell line's ``lambda``.  ``Dc``
counts the complex breaks among ``DSB``; misrepair, binary misrejoining and apoptosis read all
breaks alike.  Breaks made by cargo (``g``) are simple.

Ferroptosis (radiation-induced lipid peroxidation, Lei et al. 2020) is a third way to die:
peroxides ``Lp`` made in proportion to dose are removed by GPX4-dependent defence at
``k_p*g_F`` (``g_F``, ``ferroptosis_defence``: 1 at baseline, a modifier of the cargo module,
GPX4 up -> more defence), and while present commit cells to ferroptotic death.  Integrated,
``F = gamma_F*O*D/(k_p*g_F)``: linear in dose, a share of alpha.

Autophagy ``u`` (a modifier of the cargo module, 1 at baseline) is protective or lethal per
system, as its evidence says: protective autophagy acts through the weights of the targets that
raise it (on apoptosis or repair); lethal autophagy kills at ``k_u`` per unit of autophagy above
baseline (``autophagic_death_rate``, 0 unless a system's evidence reports autophagic death).
Like the bystander response it does not depend on dose and is not part of alpha or beta.

``O`` is the oxygen modification factor ``OER(p)/OER(p_ref)``, ``OER(p) = (m*p + K)/(p + K)``
(Alper & Howard-Flanders 1956): radiation makes fewer lesions per Gy in hypoxic cells, so an
acute dose ``D`` at pO2 ``p`` acts as ``O*D`` at the culture pO2 ``p_ref`` where the cell line's
alpha0 and beta0 were measured; alpha scales with ``O``, beta with ``O^2``.

gamma-H2AX foci are a marker, not a lesion: breaks acquire a focus at ``k_f`` (H2AX
phosphorylation spreads within minutes, Rogakou et al. 1998), a focus outlives the rejoining
of its break until the chromatin is dephosphorylated at ``k_r`` (hours), and breaks rejoined
before they are marked never show one.  The foci states feed nothing: survival and the LQ
forms below do not depend on them.  They are built only for populations whose scenario
scores the assay (``assays: [foci]``): the marking step is the fastest rate of the model and
would otherwise set the step size of every run.

The bystander response is all-or-none (McMahon et al. 2013): while the signal ``S`` of the
signalling cargo stays above the threshold ``S*`` (a steep Hill function, ``n_C`` large) the
cells respond, and a susceptible share ``f_s`` commits to death at rate ``k_C``, so the
killed share saturates at ``f_s`` (the plateau of Seymour & Mothersill 2000) whatever the
donor dose above threshold.  Responding cells also show gamma-H2AX foci: lesions ``X`` made
at ``g_b`` (``bystander_damage_rate``) while the response lasts and resolved at the DSB
rejoining rate (assumed).  Bystander foci arise from replication stress, ATR-dependent and in
S-phase cells (Burdak-Rothkamm et al. 2007; Smolarz et al. 2022), not from two-ended breaks
that misrejoin: ``X`` is a marker of the response, like the foci it feeds nothing, and the
lethality of the response is the commitment ``C``.  Like the response, the foci are then
independent of the donor dose above threshold (Yang et al. 2005).  Damaging cargo with a
graded action (``g``, miR-21 and miR-1246 repressing repair genes) adds DSBs in proportion
to its activity.  Without signal ``C = 0`` and the LQ forms below are unchanged.

With the modifiers frozen and kappa*DSB << lambda_s*rho these integrate to the
linear-quadratic form -ln SF = alpha*D + beta*G*D^2.  After an acute dose the breaks decay as
``Y*D*((1 - s_c)*exp(-lambda*rho*t) + s_c*exp(-lambda_s*rho*t))``, so with the mean break
lifetime ``tau = (1 - s_c)/lambda + s_c/lambda_s`` and the pair time
``T_b = (1 - s_c)^2/(2*lambda) + 2*s_c*(1 - s_c)/(lambda + lambda_s) + s_c^2/(2*lambda_s)``
(``int DSB^2 dt = (Y*D)^2*T_b/rho``):
alpha = (Y_L + (1 - phi)*Y + gamma*a*Y*tau/rho + gamma_F/(k_p*g_F))*O and
beta = kappa*(Y*O)^2*T_b/rho.  Calibration (convention: apoptotic share s and
ferroptotic share s_F of alpha0, direct lethal yield Y_L) inverts these for the control arm::

    kappa   = beta0/(Y^2*T_b)
    gamma   = s*alpha0/(Y*tau)
    gamma_F = s_F*alpha0*k_p
    1 - phi = ((1 - s - s_F)*alpha0 - Y_L)/Y

With one class (``s_c = 0``) ``tau = 1/lambda`` and ``T_b = 1/(2*lambda)``, the forms of
Sachs et al. 1997.

References
----------
.. [1] Lea DE, Catcheside DG (1942) The mechanism of the induction by radiation
   of chromosome aberrations in Tradescantia. J Genet 44:216-245.
.. [2] Sachs RK, Hahnfeldt P, Brenner DJ (1997) The link between low-LET
   dose-response relations and the underlying kinetics of damage production,
   repair, and misrepair. Int J Radiat Biol 72:351-374. doi:10.1080/095530097143149
.. [3] McMahon SJ, et al. (2016) A mechanistic DNA repair and survival model
   (Medras). Sci Rep 6:33290. doi:10.1038/srep33290
.. [5] McMahon SJ, et al. (2013) A kinetic-based model of radiation-induced
   intercellular signalling. PLoS One 8:e54526. doi:10.1371/journal.pone.0054526
.. [6] Seymour CB, Mothersill C (2000) Relative contribution of bystander and targeted
   cell killing to the low-dose region of the radiation dose-response curve. Radiat Res
   153:508.
.. [10] Lei G, Zhang Y, Koppula P et al. (2020) The role of ferroptosis in ionizing
   radiation-induced cell death and tumor suppression. Cell Res 30:146.
   doi:10.1038/s41422-019-0263-3
.. [8] Alper T, Howard-Flanders P (1956) Role of oxygen in modifying the radiosensitivity of
   E. coli B. Nature 178:978. doi:10.1038/178978a0
.. [9] Wouters BG, Brown JM (1997) Cells at intermediate oxygen levels can be more important
   than the "hypoxic fraction" in determining tumor response to fractionated radiotherapy.
   Radiat Res 147:541. doi:10.2307/3579620
.. [13] Burdak-Rothkamm S, Short SC, Folkard M, Rothkamm K, Prise KM (2007) ATR-dependent
   radiation-induced gamma H2AX foci in bystander primary human astrocytes and glioma cells.
   Oncogene 26:993-1002.
.. [14] Smolarz M, Skoczylas L, Gawin M et al. (2022) Radiation-induced bystander effect
   mediated by exosomes involves the replication stress in recipient cells. Int J Mol Sci
   23:4169. doi:10.3390/ijms23084169
.. [11] Sokolov MV, Smilenov LB, Hall EJ, Panyutin IG, Bonner WM, Sedelnikova OA (2005)
   Ionizing radiation induces DNA double-strand breaks in bystander primary human
   fibroblasts. Oncogene 24:7257-7265.
.. [12] Yang H, Asaad N, Held KD (2005) Medium-mediated intercellular communication is
   involved in bystander responses of X-ray-irradiated normal human fibroblasts.
   Oncogene 24:2096-2103. PMID 15688009.
.. [7] Rogakou EP, Pilch DR, Orr AH, Ivanova VS, Bonner WM (1998) DNA double-stranded
   breaks induce histone H2AX phosphorylation on serine 139. J Biol Chem 273:5858-5868.
   doi:10.1074/jbc.273.10.5858
.. [15] Riballo E, Kuhne M, Rief N et al. (2004) A pathway of double-strand break rejoining
   dependent upon ATM, Artemis, and proteins locating to gamma-H2AX foci. Mol Cell 16:715-724.
   doi:10.1016/j.molcel.2004.10.029
.. [16] Nunez MI, Villalobos M, Olea N et al. (1995) Radiation-induced DNA double-strand break
   rejoining in human tumour cells. Br J Cancer 71:311-316. PMID 7841046.
.. [4] Qi XS, et al. (2012) Radiobiological parameters of head and neck
   cancer lines. Cancers 4:566. doi:10.3390/cancers4020566
"""

from __future__ import annotations

from exosim.model.declare import Block, Derived, Rate, Rule, State

#: State increments of an acute (instantaneous) dose ``D`` in Gy, per cell.
ACUTE_DOSE = {
    "dsb": "dsb_yield*oxygen_modification*D",
    "complex_dsb": "slow_repair_share*dsb_yield*oxygen_modification*D",
    "lethal_lesions": "direct_lethal_yield*oxygen_modification*D",
    "lipid_peroxides": "oxygen_modification*D",
    "dose_received": "D",
}


def repair(population: str, foci: bool = False) -> Block:
    """DSB kinetics, lethal lesions, apoptotic commitment and survival of ``population``;
    with ``foci``, also its gamma-H2AX foci (:func:`foci_marker`)."""
    block = Block(
        module="repair",
        namespace=population,
        parameters={
            "alpha0": "alpha0",
            "beta0": "beta0",
            "repair_half_time": "repair_half_time",
            "slow_repair_share": "slow_repair_share",
            "slow_repair_half_time": "slow_repair_half_time",
            "dsb_yield": "dsb_yield",
            "apoptotic_share": "apoptotic_share",
            "ferroptotic_share": "ferroptotic_share",
            "autophagic_death_rate": "autophagic_death_rate",
            "lipid_peroxide_turnover_rate": "lipid_peroxide_turnover_rate",
            "direct_lethal_yield": "direct_lethal_yield",
            "dose_rate": "dose_rate",
            "oxygen_pressure": "oxygen_pressure",
            "reference_oxygen_pressure": "reference_oxygen_pressure",
            "oer_max": "oer_max",
            "oer_half_pressure": "oer_half_pressure",
            "bystander_susceptible_fraction": "bystander_susceptible_fraction",
            "bystander_threshold": "bystander_threshold",
            "bystander_response_hill": "bystander_response_hill",
            "bystander_commitment_rate": "bystander_commitment_rate",
        },
        context={"population": population},
        states=[
            State("dsb", "DSB/cell", "double-strand breaks per cell", scale=1.0),
            State("complex_dsb", "DSB/cell", "complex DSBs per cell (slow repair class, part of dsb)", scale=1.0),
            State(
                "lethal_lesions", "1/cell", "mean lethal lesions per cell (misrepair, binary misrejoining)", scale=0.1
            ),
            State("apoptotic_commitment", "1/cell", "mean apoptotic death events per cell", scale=0.1),
            State(
                "lipid_peroxides",
                "Gy",
                "lipid peroxides per cell, in units of the yield of 1 Gy in culture",
                scale=1.0,
            ),
            State("ferroptotic_commitment", "1/cell", "mean ferroptotic death events per cell", scale=0.1),
            State("autophagic_commitment", "1/cell", "mean autophagic death events per cell", scale=0.1),
            State("dose_received", "Gy", "cumulative absorbed dose", scale=1.0),
            State(
                "bystander_commitment",
                "1/cell",
                "mean bystander death events per susceptible cell (all-or-none response)",
                scale=10.0,  # grows to tens while the signal stays above threshold
            ),
        ],
        derived=[
            Derived(
                "oxygen_modification",
                "((oer_max*oxygen_pressure + oer_half_pressure)/(oxygen_pressure + oer_half_pressure))"
                "/((oer_max*reference_oxygen_pressure + oer_half_pressure)"
                "/(reference_oxygen_pressure + oer_half_pressure))",
                "1",
                "OMF = OER(p)/OER(p_ref), OER(p) = (m*p + K)/(p + K): lesion yields per Gy relative to culture",
            ),
            Derived(
                "repair_rate", "log(2)/repair_half_time", "1/h", "first-order rejoining rate of simple DSBs, lambda"
            ),
            Derived(
                "slow_repair_rate",
                "log(2)/slow_repair_half_time",
                "1/h",
                "first-order rejoining rate of complex DSBs, lambda_s",
            ),
            Derived(
                "mean_break_lifetime",
                "(1 - slow_repair_share)/repair_rate + slow_repair_share/slow_repair_rate",
                "h",
                "tau: mean time a radiation-induced break stays open (rho = 1, no binary term)",
            ),
            Derived(
                "break_pair_time",
                "(1 - slow_repair_share)**2/(2*repair_rate)"
                " + 2*slow_repair_share*(1 - slow_repair_share)/(repair_rate + slow_repair_rate)"
                " + slow_repair_share**2/(2*slow_repair_rate)",
                "h",
                "T_b: int DSB^2 dt/(Y*D)^2 after an acute dose (rho = 1, no binary term)",
            ),
            Derived(
                "binary_misrepair_constant",
                "beta0/(dsb_yield**2*break_pair_time)",
                "cell/(DSB*h)",
                "kappa, calibrated so the control arm has beta0",
            ),
            Derived(
                "apoptosis_constant",
                "apoptotic_share*alpha0/(dsb_yield*mean_break_lifetime)",
                "cell/(DSB*h)",
                "gamma, calibrated so apoptosis carries apoptotic_share of alpha0",
            ),
            Derived(
                "ferroptosis_constant",
                "ferroptotic_share*alpha0*lipid_peroxide_turnover_rate",
                "1/(Gy*h)",
                "gamma_F, calibrated so ferroptosis carries ferroptotic_share of alpha0",
            ),
            Derived(
                "misrepair_fraction_baseline",
                "((1 - apoptotic_share - ferroptotic_share)*alpha0 - direct_lethal_yield)/dsb_yield",
                "1",
                "1 - phi at baseline, calibrated so the control arm has alpha0",
            ),
        ],
        rules=[
            Rule(
                "bystander_response",
                "hill(bystander_signal, bystander_threshold, bystander_response_hill)",
                "1",
                "all-or-none bystander response: 0 below the signal threshold, 1 above",
            ),
            Rule(
                "rejoining_flux",
                "repair_capacity*(repair_rate*(dsb - complex_dsb) + slow_repair_rate*complex_dsb)",
                "DSB/cell/h",
                "J: breaks rejoined per cell and hour by the two classes (correctly or misrepaired)",
            ),
            Rule(
                "misrepair_fraction",
                "misrepair_fraction_baseline*misrepair_factor",
                "1",
                "1 - phi: share of rejoined breaks that are misrejoined",
            ),
            Rule(
                "surviving_fraction",
                "exp(-(lethal_lesions + apoptotic_commitment + ferroptotic_commitment + autophagic_commitment))"
                "*(1 - bystander_susceptible_fraction*(1 - exp(-bystander_commitment)))",
                "1",
                "Poisson probability of no lethal event, and of no bystander death in the susceptible share",
            ),
            Rule(
                "alpha_eff",
                "(direct_lethal_yield + misrepair_fraction*dsb_yield"
                " + apoptosis_constant*apoptotic_propensity*dsb_yield*mean_break_lifetime/repair_capacity"
                " + ferroptosis_constant/(lipid_peroxide_turnover_rate*ferroptosis_defence))"
                "*oxygen_modification",
                "1/Gy",
                "LQ alpha with the current modifiers frozen (docs/model.md section 4)",
            ),
            Rule(
                "beta_eff",
                "binary_misrepair_constant*(dsb_yield*oxygen_modification)**2*break_pair_time/repair_capacity",
                "1/Gy^2",
                "LQ beta for an acute dose with the current modifiers frozen (docs/model.md section 4)",
            ),
        ],
        rates=[
            Rate(
                "dsb",
                "dsb_yield*oxygen_modification*dose_rate + bystander_damage_drive"
                " - rejoining_flux - binary_misrepair_constant*dsb**2",
            ),
            Rate(
                "complex_dsb",
                "slow_repair_share*dsb_yield*oxygen_modification*dose_rate"
                " - slow_repair_rate*repair_capacity*complex_dsb - binary_misrepair_constant*dsb*complex_dsb",
            ),
            Rate(
                "lethal_lesions",
                "direct_lethal_yield*oxygen_modification*dose_rate"
                " + misrepair_fraction*rejoining_flux"
                " + binary_misrepair_constant*dsb**2",
            ),
            Rate("apoptotic_commitment", "apoptosis_constant*apoptotic_propensity*dsb"),
            Rate(
                "lipid_peroxides",
                "oxygen_modification*dose_rate - lipid_peroxide_turnover_rate*ferroptosis_defence*lipid_peroxides",
            ),
            Rate("ferroptotic_commitment", "ferroptosis_constant*lipid_peroxides"),
            Rate("autophagic_commitment", "autophagic_death_rate*pos(autophagy - 1)"),
            Rate("dose_received", "dose_rate"),
            Rate(
                "bystander_commitment",
                "bystander_commitment_rate*bystander_response",
            ),
        ],
    )
    return foci_marker(block) if foci else block


def foci_marker(block: Block) -> Block:
    """``block`` (a repair block) with gamma-H2AX foci: marked open breaks ``M`` and foci
    left on rejoined breaks ``R`` (module docstring)."""
    block.parameters.update(
        {
            "foci_formation_half_time": "foci_formation_half_time",
            "foci_clearance_half_time": "foci_clearance_half_time",
            "bystander_damage_rate": "bystander_damage_rate",
        }
    )
    block.states += [
        State(
            "bystander_lesions",
            "lesions/cell",
            "gamma-H2AX-marked lesions of responding bystander cells (replication stress)",
            scale=1.0,
        ),
        State("foci_on_breaks", "foci/cell", "gamma-H2AX foci on lesions not yet resolved", scale=1.0),
        State("foci_on_complex_breaks", "foci/cell", "gamma-H2AX foci on complex DSBs not yet rejoined", scale=1.0),
        State(
            "foci_after_rejoining",
            "foci/cell",
            "gamma-H2AX foci left on rejoined breaks, awaiting dephosphorylation",
            scale=1.0,
        ),
    ]
    block.derived += [
        Derived("foci_formation_rate", "log(2)/foci_formation_half_time", "1/h", "marking rate of open breaks, k_f"),
        Derived(
            "foci_clearance_rate",
            "log(2)/foci_clearance_half_time",
            "1/h",
            "removal rate of foci from rejoined breaks, k_r",
        ),
    ]
    block.rules += [
        Rule(
            "foci",
            "foci_on_breaks + foci_after_rejoining",
            "foci/cell",
            "gamma-H2AX foci per cell (marker of DSBs with formation and removal lags)",
        ),
        Rule(
            "break_rejoining_rate",
            "repair_rate*repair_capacity + binary_misrepair_constant*dsb",
            "1/h",
            "per-break rate at which simple breaks are rejoined (correctly, misrepaired or binary)",
        ),
        Rule(
            "complex_break_rejoining_rate",
            "slow_repair_rate*repair_capacity + binary_misrepair_constant*dsb",
            "1/h",
            "per-break rate at which complex breaks are rejoined",
        ),
        Rule(
            "marked_rejoining_flux",
            "break_rejoining_rate*(foci_on_breaks - foci_on_complex_breaks)"
            " + complex_break_rejoining_rate*foci_on_complex_breaks",
            "foci/cell/h",
            "marked lesions rejoined per cell and hour: their foci move from open to rejoined",
        ),
    ]
    block.rates += [
        Rate(
            "bystander_lesions",
            "bystander_damage_rate*bystander_response - repair_rate*repair_capacity*bystander_lesions",
        ),
        Rate(
            "foci_on_breaks",
            "foci_formation_rate*(dsb + bystander_lesions - foci_on_breaks) - marked_rejoining_flux",
        ),
        Rate(
            "foci_on_complex_breaks",
            "foci_formation_rate*(complex_dsb - foci_on_complex_breaks)"
            " - complex_break_rejoining_rate*foci_on_complex_breaks",
        ),
        Rate(
            "foci_after_rejoining",
            "marked_rejoining_flux - foci_clearance_rate*foci_after_rejoining",
        ),
    ]
    return block
