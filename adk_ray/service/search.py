"""Ray Tune's OptunaSearch for a `search:` sweep, with constraints and resume.

* Constraints: Optuna (>= 5) stores constraint values on the trial (`Trial.set_constraint`) and its
  TPESampler ranks infeasible trials after every feasible one, by how far they miss. OptunaSearch only
  tells Optuna the objective, so a small subclass sets the constraint first.
* Resume: the results store, not Tune's experiment state, says what has been evaluated. Finished
  trials are added to the Optuna study before the search starts (with their objective and
  constraint), so a re-run proposes only the remaining `num_samples` and learns from the earlier ones.
"""
from __future__ import annotations

import json
import math

import optuna
from ray.tune.search.optuna import OptunaSearch

from adk_ray.service.objective import objective
from adk_ray.service.plan import config_json
from adk_ray.service.spec import SearchSpec
from adk_ray.service.store import ResultStore
from adk_ray.service.worlds import TrialConfig

CONSTRAINT_KEY = "constraint_violation"
"""Result key the trial reports the constraint under (<= 0: feasible)."""
STUDY = "adk_ray"
optuna.logging.set_verbosity(optuna.logging.WARNING)  # the tqdm bar is the progress report


class ConstrainedOptunaSearch(OptunaSearch):
    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        violation = (result or {}).get(CONSTRAINT_KEY)
        ot_trial = self._ot_trials.get(trial_id)  # OptunaSearch's live optuna.Trial for this Tune trial
        if ot_trial is not None and violation is not None and not math.isnan(violation):
            ot_trial.set_constraint("constraint", violation)
        super().on_trial_complete(trial_id, result, error)


def distributions(search: SearchSpec) -> dict[str, optuna.distributions.BaseDistribution]:
    out = {}
    for key, r in search.space.items():
        if r.choices is not None:
            out[key] = optuna.distributions.CategoricalDistribution(list(r.choices))
        elif isinstance(r.low, int):
            out[key] = optuna.distributions.IntDistribution(r.low, r.high, log=r.log)
        else:
            out[key] = optuna.distributions.FloatDistribution(r.low, r.high, log=r.log)
    return out


def past_trials(store: ResultStore, base: TrialConfig, search: SearchSpec) -> list[tuple[str, dict, dict]]:
    """(trial_id, searched params, objective dict) of finished trials of this search."""
    reference = {k: v for k, v in json.loads(config_json(base)).items() if k not in search.space}
    dists = distributions(search)
    found = []
    for tid in sorted(store.finished_ids()):
        table = store.read_data(tid)
        cfg = json.loads(table.column("config_json")[0].as_py())
        if {k: v for k, v in cfg.items() if k not in search.space} != reference:
            continue  # another search (other fixed settings) wrote into the same directory
        params = {k: cfg[k] for k in search.space}
        if all(dists[k]._contains(dists[k].to_internal_repr(v)) for k, v in params.items()):
            found.append((tid, params, objective(table, search)))
    return found


def make_searcher(search: SearchSpec, past: list[tuple[str, dict, dict]]) -> OptunaSearch:
    dists = distributions(search)
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name=STUDY,
                                direction="maximize" if search.mode == "max" else "minimize")
    for _, params, outcome in past:
        value = outcome[search.metric]
        if math.isnan(value):
            study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL, params=params,
                                                      distributions=dists))
            continue
        violation = outcome.get(CONSTRAINT_KEY)
        constraints = {"constraint": violation} if violation is not None and not math.isnan(violation) else None
        study.add_trial(optuna.trial.create_trial(value=value, params=params, distributions=dists,
                                                  constraints=constraints))
    return ConstrainedOptunaSearch(space=dists, metric=search.metric, mode=search.mode,
                                   sampler=optuna.samplers.TPESampler(seed=search.seed),
                                   storage=storage, study_name=STUDY)

