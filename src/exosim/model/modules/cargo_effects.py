"""Cargo effects on targets and phenotype modifiers of one population (docs/model.md section 3.3).

Equations (per cell)::

    dm_j/dt = delivery_j - ln2/t_j*m_j                        functional cargo
    A_j     = H(m_j; K_j, n_j)                                 cargo activity
    dT_k/dt = k_T*((1 + sum_j r_jk*A_j) - T_k)                 target level, 1 at baseline
    rho     = prod_k T_k^w_rho,k                               repair capacity
    mis     = prod_k T_k^w_mis,k                               misrepair factor, (1 - phi) = (1 - phi0)*mis
    a       = prod_k T_k^w_apo,k                               apoptotic propensity
    g_F     = prod_k T_k^w_fer,k                               ferroptosis defence (GPX4)
    u       = prod_k T_k^w_aut,k                               autophagy (1 at baseline)
    M1      = prod_k T_k^w_m1,k                                M1 polarisation of macrophages (1: M0);
                                                               scales the free release of cargo marked
                                                               free_release_with: m1_polarisation
    g       = sum_j g_j*A_j                                    bystander DSB induction
    S       = sum_j A_j  (j signalling)                        bystander signal

Sponges (competing endogenous RNAs) compete with the target sites of an endogenous repressor
``r`` of the recipient (a miRNA, or an RNA-binding protein such as PUM1): ``M_r`` repressor
copies per cell bind ``P_r`` endogenous sites plus the sponge sites ``Z_r``::

    Z_r      = sum_j s_jr*m_j                                  sponge sites per cell
    N_r      = P_r + Z_r                                       all sites
    theta_r  = b_r/N_r = 2*M_r/((M_r + N_r + K_D) + sqrt((M_r + N_r + K_D)^2 - 4*M_r*N_r))
    T_k setpoint *= (1 + e_rk*theta_r)/(1 + e_rk*theta_r0)    theta_r0: theta_r at Z_r = 0

``b_r`` is the bound repressor of the binding equilibrium ``(M_r - b)(N_r - b) = K_D*b``,
written in its numerically stable root; ``theta_r`` is the occupancy of a site, so of the
target's own sites, and ``e_rk`` the signed change of target ``k`` at full occupancy.  With
tight binding and more sites than repressor copies (Denzler et al. 2014) ``theta_r =
M_r/(P_r + Z_r)``: a sponge relieves repression only when its sites approach the endogenous
site pool, whatever the repressor's own copy number (the ceRNA threshold).

References
----------
.. [1] Baek D, et al. (2008) The impact of microRNAs on protein output. Nature
   455:64. doi:10.1038/nature07242
.. [2] Kingston ER, Bartel DP (2019) Global analyses of the dynamics of
   mammalian microRNA metabolism. Genome Res 29:1777. doi:10.1101/gr.251421.119
.. [4] Denzler R, Agarwal V, Stefano J, Bartel DP, Stoffel M (2014) Assessing the ceRNA
   hypothesis with quantitative measurements of miRNA and target abundance. Mol Cell 54:766.
   doi:10.1016/j.molcel.2014.03.045
.. [3] Chevillet JR, et al. (2014) Quantitative and stoichiometric analysis of
   the microRNA content of exosomes. PNAS 111:14888. doi:10.1073/pnas.1408301111
"""

from __future__ import annotations

from exosim.model.declare import Block, Derived, Rate, Rule, State

MODIFIERS = (
    "repair_capacity",
    "misrepair_factor",
    "apoptotic_propensity",
    "ferroptosis_defence",
    "autophagy",
    "m1_polarisation",
)


def cargo_effects(
    population: str,
    cargos: list[str],
    effects: dict[str, dict[str, float]],
    targets: dict[str, dict[str, float]],
    damaging: list[str],
    signalling: list[str] = (),
    sponges: dict[str, dict[str, float]] | None = None,
    repressors: dict[str, dict[str, float]] | None = None,
) -> Block:
    """Cytosolic cargo, target levels and modifiers of ``population``.

    Parameters
    ----------
    population : population namespace
    cargos : cargo species of the model
    effects : cargo -> {target: r_jk}; signed fractional change at saturation
    targets : target -> {modifier: weight}; modifiers are :data:`MODIFIERS`
    damaging : cargo species that induce DSBs (bystander damage drive)
    signalling : cargo species whose activity is the signal of the all-or-none bystander
        response (cargo catalogue ``bystander_signal: true``; docs/model.md section 3.4)
    sponges : cargo -> {repressor: binding sites per copy} (cargo catalogue ``sponges``)
    repressors : endogenous repressor -> {target: e_rk}, signed change of the target at full
        occupancy of its sites (negative: repression); only repressors some cargo sponges
    """
    sponges = sponges or {}
    repressors = repressors or {}
    block = Block(module="cargo_effects", namespace=population, context={"population": population})

    def bind(pairs: tuple[tuple[str, str], ...], context: dict[str, str]) -> None:
        """Declare local parameters -> table keys, resolved in ``context`` (cargo, repressor,
        target, modifier)."""
        for local, key in pairs:
            block.parameters[local] = key
            block.param_context[local] = dict(context)

    for c in cargos:
        bind(
            (
                (f"{c}_half_life", "cytosolic_half_life"),
                (f"{c}_half_effect_copies", "half_effect_copies"),
                (f"{c}_hill", "cargo_hill"),
            ),
            {"cargo": c},
        )
        block.states.append(State(f"{c}_cytosolic", "copies/cell", f"functional {c} in the cytosol", scale=1e-2))
        block.rates.append(Rate(f"{c}_cytosolic", f"-log(2)/{c}_half_life*{c}_cytosolic"))
        block.rules.append(
            Rule(
                f"{c}_activity",
                f"hill({c}_cytosolic, {c}_half_effect_copies, {c}_hill)",
                "1",
                f"saturating activity of {c}",
            )
        )
    for r in repressors:
        bind(
            (
                (f"{r}_copies", "repressor_copies"),
                (f"{r}_target_sites", "repressor_target_sites"),
                (f"{r}_dissociation", "sponge_dissociation_constant"),
            ),
            {"repressor": r},
        )
        sites = []
        for c in cargos:
            if r in sponges.get(c, {}):
                bind(((f"{c}_sites_{r}", "sponge_sites"),), {"cargo": c, "repressor": r})
                sites.append(f"{c}_sites_{r}*{c}_cytosolic")
        block.rules.append(
            Rule(f"{r}_sponge_sites", " + ".join(sites) or "0", "sites/cell", f"sponge sites for {r} per cell, Z_r")
        )

        def occupancy(n: str, r: str = r) -> str:
            m, kd = f"{r}_copies", f"{r}_dissociation"
            return f"2*{m}/(({m} + {n} + {kd}) + sqrt(({m} + {n} + {kd})**2 - 4*{m}*{n}))"

        block.rules.append(
            Rule(
                f"{r}_occupancy",
                occupancy(f"({r}_target_sites + {r}_sponge_sites)"),
                "1",
                f"share of {r}'s binding sites occupied (binding equilibrium, stable root), theta_r",
            )
        )
        block.derived.append(
            Derived(
                f"{r}_occupancy_baseline",
                occupancy(f"{r}_target_sites"),
                "1",
                f"share of {r}'s sites occupied without sponges, theta_r0",
            )
        )
    for k in targets:
        bind(((f"{k}_turnover_rate", "target_turnover_rate"),), {"target": k})
        terms = []
        for c in cargos:
            if k in effects.get(c, {}):
                bind(((f"{c}_on_{k}", "cargo_effect_strength"),), {"cargo": c, "target": k})
                terms.append(f"{c}_on_{k}*{c}_activity")
        setpoint = "1" + "".join(f" + {t}" for t in terms)
        relief = []
        for r, hits in repressors.items():
            if k in hits:
                local = f"{r}_on_{k}"
                bind(((local, "repressor_effect_strength"),), {"repressor": r, "target": k})
                relief.append(f"(1 + {local}*{r}_occupancy)/(1 + {local}*{r}_occupancy_baseline)")
        if relief:
            setpoint = f"({setpoint})*" + "*".join(relief)
        block.states.append(State(f"{k}_level", "1", f"{k} level relative to baseline", initial="1"))
        block.rules.append(Rule(f"{k}_setpoint", setpoint, "1", f"level {k} relaxes to"))
        block.rates.append(Rate(f"{k}_level", f"{k}_turnover_rate*({k}_setpoint - {k}_level)"))
    for mod in MODIFIERS:
        factors = []
        for k, weights in targets.items():
            if weights.get(mod, 0.0) != 0.0:
                local = f"{k}_weight_{mod}"
                bind(((local, "target_modifier_weight"),), {"target": k, "modifier": mod})
                factors.append(f"{k}_level**{local}")
        block.rules.append(Rule(mod, "*".join(factors) if factors else "1", "1", f"{mod.replace('_', ' ')}"))
    drive = []
    for c in damaging:
        local = f"{c}_damage_rate"
        bind(((local, "damage_max_rate"),), {"cargo": c})
        drive.append(f"{local}*{c}_activity")
    block.rules.append(
        Rule(
            "bystander_damage_drive",
            " + ".join(drive) if drive else "0",
            "DSB/cell/h",
            "g: DSB induction by damaging cargo",
        )
    )
    block.rules.append(
        Rule(
            "bystander_signal",
            " + ".join(f"{c}_activity" for c in signalling) if signalling else "0",
            "1",
            "S: summed activity of the signalling cargo, the signal the bystander response reads",
        )
    )
    return block
