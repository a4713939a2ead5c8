"""Transport of vesicles through media and their uptake by cells (docs/model.md section 3.2).

Medium (amounts, particles or copies, in volume V)::

    dE/dt = sum_pop N*(J - b + k_off*B) - k_dec*E + links
    b     = k_on*f_bind*R_free*E/V                       binding per cell
    R_free = max(R_tot*u - B, 0)
    du/dt  = k_u*(1 + E_up*D/(D + D50) - u)              u = 1 before any dose

Recipient (per cell)::

    dB/dt = b - (k_off + k_int*f_int)*B
    dI/dt = k_int*f_int*B - (k_esc + k_deg)*I

Irradiation raises the binding capacity (CD29/CD81 complexes, Hazawa et al. 2014) with a lag:
``u`` approaches its level for the received dose ``D`` at ``k_u``, so vesicles added right
after irradiation meet unchanged cells.

Cargo copies travel with their vesicles: each vesicle flux carries the cargo
of the pool it leaves (cargo binding = k_on*f_bind*R_free*Q/V), and escape
delivers ``k_esc*Q_I`` copies to the cytosol.  Free (non-vesicular) cargo has
its own decay and a slow uptake clearance.  Cumulative counters (released,
decayed, escaped, degraded) make particle and cargo conservation checkable at
every time point.

References
----------
.. [1] Heusermann W, et al. (2016) Exosomes surf on filopodia to enter cells at
   endocytic hot spots, traffic within endosomes, and are targeted to the ER.
   J Cell Biol 213:173. doi:10.1083/jcb.201506084
.. [2] Hazawa M, et al. (2014) Radiation increases the cellular uptake of
   exosomes through CD29/CD81 complex formation. Biochem Biophys Res Commun
   446:1165. doi:10.1016/j.bbrc.2014.03.067
.. [3] Mutschelknaus L, et al. (2016) Exosomes derived from squamous head and
   neck cancer promote cell survival after ionizing radiation. PLoS ONE
   11:e0152213. doi:10.1371/journal.pone.0152213
.. [4] Yuan D, et al. (2016) Extracellular miR-1246 after irradiation is mostly
   non-vesicular. Oncotarget 7:32707. doi:10.18632/oncotarget.9017
.. [5] Morishita M, et al. (2015) Quantitative analysis of tissue distribution
   of the B16BL6-derived exosomes. J Pharm Sci 104:705. doi:10.1002/jps.24251
"""

from __future__ import annotations

from exosim.model.declare import SEP, Block, Derived, Rate, Rule, State


def medium(name: str, cargos: list[str]) -> Block:
    """Vesicles, vesicular and free cargo, and their decay in medium ``name``."""
    block = Block(
        module="transport",
        namespace=name,
        parameters={
            "volume": "volume",
            "vesicle_decay_rate": "vesicle_decay_rate",
            "free_cargo_decay_rate": "free_cargo_decay_rate",
        },
        context={"medium": name},
        states=[
            State("vesicles", "particles", "exosomes in the medium", scale=1e6),
            State("released_particles", "particles", "cumulative release into this medium", scale=1e6),
            State("decayed_particles", "particles", "cumulative vesicle decay or clearance", scale=1e6),
        ],
        rules=[Rule("vesicle_concentration", "vesicles/volume", "particles/mL", "exosome concentration")],
        rates=[
            Rate("vesicles", "-vesicle_decay_rate*vesicles"),
            Rate("decayed_particles", "vesicle_decay_rate*vesicles"),
        ],
    )
    for c in cargos:
        block.states += [
            State(f"{c}_vesicular", "copies", f"{c} inside vesicles in the medium", scale=1e3),
            State(f"{c}_free", "copies", f"non-vesicular {c} in the medium", scale=1e3),
            State(f"{c}_released", "copies", f"cumulative {c} released into this medium", scale=1e3),
            State(f"{c}_decayed", "copies", f"cumulative {c} lost to decay in this medium", scale=1e3),
        ]
        block.rates += [
            Rate(f"{c}_vesicular", f"-vesicle_decay_rate*{c}_vesicular"),
            Rate(f"{c}_free", f"-free_cargo_decay_rate*{c}_free"),
            Rate(f"{c}_decayed", f"vesicle_decay_rate*{c}_vesicular + free_cargo_decay_rate*{c}_free"),
        ]
    return block


def medium_link(source: str, target: str, cargos: list[str]) -> Block:
    """First-order transfer of vesicles and cargo from medium ``source`` to ``target``.

    Used for systemic spread (tumour -> blood -> distant tumour) and any other
    wiring of media; the rate constant is a parameter of the link.
    """
    ns = f"{source}_to_{target}"
    s, t = f"{source}{SEP}", f"{target}{SEP}"
    block = Block(
        module="transport",
        namespace=ns,
        parameters={"transfer_rate": "link_transfer_rate"},
        context={"link": ns},
        rates=[Rate(f"{s}vesicles", f"-transfer_rate*{s}vesicles"), Rate(f"{t}vesicles", f"transfer_rate*{s}vesicles")],
    )
    for c in cargos:
        for kind in ("vesicular", "free"):
            block.rates += [
                Rate(f"{s}{c}_{kind}", f"-transfer_rate*{s}{c}_{kind}"),
                Rate(f"{t}{c}_{kind}", f"transfer_rate*{s}{c}_{kind}"),
            ]
    return block


def uptake(population: str, medium_name: str, cargos: list[str]) -> Block:
    """Binding, internalisation, escape and degradation of vesicles by ``population``."""
    m = f"{medium_name}{SEP}"
    block = Block(
        module="transport",
        namespace=population,
        parameters={
            "binding_sites": "binding_sites",
            "binding_rate_constant": "binding_rate_constant",
            "unbinding_rate": "unbinding_rate",
            "internalisation_rate": "internalisation_rate",
            "endosomal_escape_rate": "endosomal_escape_rate",
            "endosomal_degradation_rate": "endosomal_degradation_rate",
            "uptake_radiation_enhancement": "uptake_radiation_enhancement",
            "uptake_enhancement_half_dose": "uptake_enhancement_half_dose",
            "uptake_enhancement_onset_half_time": "uptake_enhancement_onset_half_time",
            "free_cargo_uptake_clearance": "free_cargo_uptake_clearance",
            "binding_factor": "binding_factor",
            "internalisation_factor": "internalisation_factor",
        },
        context={"population": population},
        states=[
            State("bound_vesicles", "particles/cell", "vesicles bound to the cell surface", scale=1.0),
            State("internalised_vesicles", "particles/cell", "vesicles in endosomes", scale=1.0),
            State(
                "escaped_vesicles", "particles/cell", "cumulative vesicles whose content reached the cytosol", scale=1.0
            ),
            State("degraded_vesicles", "particles/cell", "cumulative vesicles degraded in lysosomes", scale=1.0),
            State(
                "uptake_enhancement",
                "1",
                "u: radiation-enhanced binding capacity relative to unirradiated cells (CD29/CD81)",
                scale=1.0,
                initial="1",
            ),
        ],
        derived=[
            Derived(
                "uptake_enhancement_onset_rate",
                "log(2)/uptake_enhancement_onset_half_time",
                "1/h",
                "k_u: rate at which the binding capacity follows the received dose",
            ),
        ],
        rules=[
            Rule(
                "uptake_enhancement_target",
                "1 + uptake_radiation_enhancement*dose_received/(dose_received + uptake_enhancement_half_dose)",
                "1",
                "u*: binding capacity the received dose leads to (CD29/CD81)",
            ),
            Rule(
                "free_sites",
                "pos(binding_sites*uptake_enhancement - bound_vesicles)",
                "sites/cell",
                "unoccupied binding sites R_free",
            ),
            Rule(
                "capture_rate",
                f"binding_rate_constant*binding_factor*free_sites/{m}volume",
                "1/h",
                "share of the medium's vesicles one cell binds per hour",
            ),
            Rule("binding_flux", f"capture_rate*{m}vesicles", "particles/cell/h", "vesicle binding per cell"),
            Rule(
                "internalisation_flux",
                "internalisation_rate*internalisation_factor*bound_vesicles",
                "particles/cell/h",
                "vesicle internalisation per cell",
            ),
            Rule(
                "escape_flux",
                "endosomal_escape_rate*internalised_vesicles",
                "particles/cell/h",
                "vesicles releasing content into the cytosol per cell",
            ),
        ],
        rates=[
            Rate("bound_vesicles", "binding_flux - unbinding_rate*bound_vesicles - internalisation_flux"),
            Rate(
                "internalised_vesicles",
                "internalisation_flux - (endosomal_escape_rate + endosomal_degradation_rate)*internalised_vesicles",
            ),
            Rate(
                "uptake_enhancement", "uptake_enhancement_onset_rate*(uptake_enhancement_target - uptake_enhancement)"
            ),
            Rate("escaped_vesicles", "escape_flux"),
            Rate("degraded_vesicles", "endosomal_degradation_rate*internalised_vesicles"),
            Rate(f"{m}vesicles", "cells*(unbinding_rate*bound_vesicles - binding_flux)"),
        ],
    )
    for c in cargos:
        block.states += [
            State(f"{c}_bound", "copies/cell", f"{c} in surface-bound vesicles", scale=1e-2),
            State(f"{c}_internalised", "copies/cell", f"{c} in endosomal vesicles", scale=1e-2),
            State(f"{c}_delivered", "copies/cell", f"cumulative {c} delivered to the cytosol", scale=1e-2),
            State(f"{c}_degraded", "copies/cell", f"cumulative {c} degraded in lysosomes", scale=1e-2),
        ]
        internalisation = f"internalisation_rate*internalisation_factor*{c}_bound"
        free_uptake = f"free_cargo_uptake_clearance*{m}{c}_free/{m}volume"
        block.rates += [
            Rate(f"{c}_bound", f"capture_rate*{m}{c}_vesicular - unbinding_rate*{c}_bound - {internalisation}"),
            Rate(
                f"{c}_internalised",
                f"{internalisation} - (endosomal_escape_rate + endosomal_degradation_rate)*{c}_internalised",
            ),
            Rate(f"{c}_delivered", f"endosomal_escape_rate*{c}_internalised + {free_uptake}"),
            Rate(f"{c}_degraded", f"endosomal_degradation_rate*{c}_internalised"),
            Rate(f"{c}_cytosolic", f"endosomal_escape_rate*{c}_internalised + {free_uptake}"),
            Rate(f"{m}{c}_vesicular", f"cells*(unbinding_rate*{c}_bound - capture_rate*{m}{c}_vesicular)"),
            Rate(f"{m}{c}_free", f"-cells*{free_uptake}"),
        ]
    return block
