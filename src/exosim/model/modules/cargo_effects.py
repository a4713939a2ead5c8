"""Cargo effects on targets and phenotype modifiers of one population (docs/model.md section 3.3).

Equations (per cell)::

    dm_j/dt = delivery_j - ln2/t_j*m_j                        functional cargo
    A_j     = H(m_j; K_j, n_j)                                 cargo activity
    dT_k/dt = k_T*((1 + sum_j r_jk*A_j) - T_k)                 target level, 1 at baseline
    rho     = prod_k T_k^w_rho,k                               repair capacity
    mis     = prod_k T_k^w_mis,k                               misrepair factor, (1 - phi) = (1 - phi0)*mis
    a       = prod_k T_k^w_apo,k                               apoptotic propensity
    g       = sum_j g_j*A_j                                    bystander DSB induction
    S       = sum_j A_j  (j signalling)                        bystander signal

``r_jk < 0`` is repression by a miRNA (modest, Baek et al. 2008); ``r_jk > 0``
is activation by protein cargo or an unspecified exosome factor.  The power
form keeps every modifier positive and equal to 1 at baseline.  Which cargo
acts on which target, and which target feeds which modifier with what weight,
comes from the cargo catalogue (data), not from code.

References
----------
.. [1] Baek D, et al. (2008) The impact of microRNAs on protein output. Nature
   455:64. doi:10.1038/nature07242
.. [2] Kingston ER, Bartel DP (2019) Global analyses of the dynamics of
   mammalian microRNA metabolism. Genome Res 29:1777. doi:10.1101/gr.251421.119
.. [3] Chevillet JR, et al. (2014) Quantitative and stoichiometric analysis of
   the microRNA content of exosomes. PNAS 111:14888. doi:10.1073/pnas.1408301111
"""

from __future__ import annotations

from exosim.model.declare import Block, Rate, Rule, State

MODIFIERS = ("repair_capacity", "misrepair_factor", "apoptotic_propensity")


def cargo_effects(
    population: str,
    cargos: list[str],
    effects: dict[str, dict[str, float]],
    targets: dict[str, dict[str, float]],
    damaging: list[str],
    signalling: list[str] = (),
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
    """
    block = Block(module="cargo_effects", namespace=population, context={"population": population})
    for c in cargos:
        for local, key in (
            (f"{c}_half_life", "cytosolic_half_life"),
            (f"{c}_half_effect_copies", "half_effect_copies"),
            (f"{c}_hill", "cargo_hill"),
        ):
            block.parameters[local] = key
            block.param_context[local] = {"cargo": c}
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
    for k in targets:
        block.parameters[f"{k}_turnover_rate"] = "target_turnover_rate"
        block.param_context[f"{k}_turnover_rate"] = {"target": k}
        terms = []
        for c in cargos:
            if k in effects.get(c, {}):
                local = f"{c}_on_{k}"
                block.parameters[local] = "cargo_effect_strength"
                block.param_context[local] = {"cargo": c, "target": k}
                terms.append(f"{local}*{c}_activity")
        setpoint = "1" + "".join(f" + {t}" for t in terms)
        block.states.append(State(f"{k}_level", "1", f"{k} level relative to baseline", initial="1"))
        block.rules.append(Rule(f"{k}_setpoint", setpoint, "1", f"level {k} relaxes to"))
        block.rates.append(Rate(f"{k}_level", f"{k}_turnover_rate*({k}_setpoint - {k}_level)"))
    for mod in MODIFIERS:
        factors = []
        for k, weights in targets.items():
            if weights.get(mod, 0.0) != 0.0:
                local = f"{k}_weight_{mod}"
                block.parameters[local] = "target_modifier_weight"
                block.param_context[local] = {"target": k, "modifier": mod}
                factors.append(f"{k}_level**{local}")
        block.rules.append(Rule(mod, "*".join(factors) if factors else "1", "1", f"{mod.replace('_', ' ')}"))
    drive = []
    for c in damaging:
        local = f"{c}_damage_rate"
        block.parameters[local] = "damage_max_rate"
        block.param_context[local] = {"cargo": c}
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
