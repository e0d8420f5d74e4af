import hashlib
import json
from collections import defaultdict

import numpy as np
import pytest

from training import bank
from training.core.contract import load_dataset
from training.core.featurizer import normalize_url, url_area
from training.core.sessionize import sessionize
from training.synthetic import GeneratorConfig, generate
from training.worlds import WORLD_NAMES, get_world
from training.worlds.base import DAY_MS, Dynamics, NeedState, need_strength


def test_site_and_intents_are_rich_enough():
    assert len(bank.ALL_PAGES) >= 60
    assert len(bank.SITE) - 1 >= 8  # product areas besides home
    assert len(bank.INTENTS) >= 10
    assert "casual_browsing" in bank.INTENT_NAMES
    for name in WORLD_NAMES:
        w = get_world(name)
        assert 8 <= len(w.intents) <= 14 and 8 <= len(w.tiles) <= 14, name
        assert {t for i in w.intents for t in i.tiles} <= set(w.tiles), name
        assert {p for i in w.intents for p in i.pages} <= set(w.all_pages), name


@pytest.mark.parametrize("world", WORLD_NAMES)
def test_reproducible_by_seed(tmp_path, world):
    def digest(seed: int, name: str) -> str:
        generate(GeneratorConfig(visitors=150, seed=seed, world=world), tmp_path / name)
        return hashlib.sha256((tmp_path / name / "events.jsonl").read_bytes()
                              + (tmp_path / name / "impressions.jsonl").read_bytes()).hexdigest()

    assert digest(3, "a") == digest(3, "b")
    assert digest(3, "a") != digest(4, "c")
    assert json.loads((tmp_path / "a" / "truth" / "generator_config.json").read_text())["world"] == world


@pytest.mark.parametrize("world", WORLD_NAMES)
def test_every_world_satisfies_the_contract(tmp_path, world):
    generate(GeneratorConfig(visitors=300, seed=5, world=world), tmp_path)
    ds = load_dataset(tmp_path, strict=True)
    assert ds.report.ok and ds.events and ds.customers and ds.impressions and ds.conversions
    sessions = sessionize(ds.events)
    truth = {json.loads(x)["session_id"] for x in (tmp_path / "truth" / "sessions.jsonl").open()}
    assert sum(s.session_id in truth for s in sessions) / len(sessions) > 0.99
    assert {t.tile_id for t in ds.tiles} == set(get_world(world).tiles)
    assert 0.03 < sum(i.clicked for i in ds.impressions) / len(ds.impressions) < 0.5


def test_generated_data_satisfies_the_contract_and_truth_matches_sessions(small_data):
    ds = load_dataset(small_data, strict=True)
    assert ds.report.ok and ds.events and ds.customers and ds.impressions and ds.conversions
    sessions = sessionize(ds.events)
    truth = {json.loads(x)["session_id"] for x in (small_data / "truth" / "sessions.jsonl").open()}
    matched = sum(s.session_id in truth for s in sessions)
    assert matched / len(sessions) > 0.99
    linked = {s.customer_id for s in sessions if s.customer_id}
    assert len(linked) > 100 and linked <= {c.customer_id for c in ds.customers}
    areas = {url_area(normalize_url(e.url)) for e in ds.events}
    assert len(areas) >= 15
    assert {e.event_type for e in ds.events} >= {"page_view", "click", "search", "form_start", "calculator", "login"}
    clicks = sum(i.clicked for i in ds.impressions) / len(ds.impressions)
    assert 0.03 < clicks < 0.5


@pytest.fixture(scope="module")
def bank_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("bank_world")
    generate(GeneratorConfig(visitors=300, seed=2, world="bank"), out)
    sessions = {s.session_id: s for s in sessionize(load_dataset(out, strict=True).events)}
    truth = [json.loads(x) for x in (out / "truth" / "sessions.jsonl").open()]
    return out, sessions, truth


def test_funnel_stage_advances_over_a_needs_sessions(bank_world):
    _, _, truth = bank_world
    by_need = defaultdict(list)
    for r in truth:
        by_need[(r["anonymous_id"], r["need"])].append((r["session_id"], r["stage"]))
    advanced = 0
    for rows in by_need.values():
        stages = [s for _, s in sorted(rows, key=lambda x: int(x[0].split("@")[1]))]
        assert stages == sorted(stages)  # never back up the funnel
        advanced += stages[-1] > stages[0]
    assert advanced >= 20 and sum(len(r) > 1 for r in by_need.values()) >= 50  # return visits


def test_dwell_depends_on_the_stage_and_switches_keep_the_main_intent(bank_world):
    _, sessions, truth = bank_world
    world, dwell = get_world("bank"), defaultdict(list)
    switched = [r for r in truth if r["switched_from"]]
    assert 0.1 < len(switched) / len(truth) < 0.3
    for r in truth:
        s = sessions[r["session_id"]]
        dwell[r["stage"]] += [e.dwell_ms for e in s.events if e.event_type == "page_view" and e.dwell_ms]
    mean = {k: np.mean(v) for k, v in dwell.items()}
    assert mean[1] > mean[0] * 1.1 and mean[2] < mean[1]
    # a switched session opens on the other intent's pages and is labelled with its main intent
    main_pages = {i.name: set(i.pages) for i in world.intents}
    first_on_other = 0
    for r in switched:
        s = sessions[r["session_id"]]
        pages = [normalize_url(e.url) for e in s.events if e.event_type == "page_view"]
        first_on_other += any(p in main_pages[r["switched_from"]] for p in pages[:2])
    assert first_on_other / len(switched) > 0.5
    assert all(r["intent"] != r["switched_from"] for r in switched)


def test_conversion_rises_with_the_stage_reached(tmp_path):
    generate(GeneratorConfig(visitors=300, seed=4, world="bank"), tmp_path)
    customers = [json.loads(x) for x in (tmp_path / "truth" / "customers.jsonl").open()]
    converted = {json.loads(x)["customer_id"] for x in (tmp_path / "conversions.jsonl").open()}
    by_stage = defaultdict(list)
    for c in customers:
        needs = [n for n in c["needs"] if n["stages"]]
        if needs:
            by_stage[max(max(n["stages"]) for n in needs)].append(c["customer_id"] in converted)
    rate = {k: np.mean(v) for k, v in by_stage.items()}
    assert rate[0] < rate[1] < rate[2], rate


def test_need_strength_decays_and_follows_the_stage():
    d = Dynamics(kind="funnel", half_life_days=5.0, stage_strength=(0.5, 0.8, 1.0))
    need = NeedState("x", 0, (DAY_MS, 3 * DAY_MS), (0, 2))
    s = need_strength(d, need, np.array([0, DAY_MS, 2 * DAY_MS, 3 * DAY_MS, 8 * DAY_MS]))
    np.testing.assert_allclose(s, [0.0, 0.5, 0.5 * 2 ** -0.2, 1.0, 0.5])
    window = Dynamics(kind="window", need_days=21)
    np.testing.assert_array_equal(need_strength(window, NeedState("x", DAY_MS), [0, DAY_MS, 22 * DAY_MS - 1,
                                                                                   22 * DAY_MS]), [0, 1, 1, 0])


def test_app_only_customers_have_no_research_need(bank_world):
    out, _, _ = bank_world
    customers = [json.loads(x) for x in (out / "truth" / "customers.jsonl").open()]
    assert any(not c["web"] for c in customers)
    assert all(not c["needs"] for c in customers if not c["web"])
    assert all(c["needs"] for c in customers if c["web"])
    assert np.mean([len(c["needs"]) > 1 for c in customers if c["web"]]) > 0.25


def test_weak_world_is_the_previous_design(tmp_path):
    generate(GeneratorConfig(visitors=200, seed=3, world="weak"), tmp_path)
    cfg = json.loads((tmp_path / "truth" / "generator_config.json").read_text())
    assert cfg["need_days"] == 21 and cfg["noise_pages"] == 0.3 and cfg["session_intent_stickiness"] == 0.8
    truth = [json.loads(x) for x in (tmp_path / "truth" / "sessions.jsonl").open()]
    assert "stage" not in truth[0]
    customers = [json.loads(x) for x in (tmp_path / "truth" / "customers.jsonl").open()]
    assert all(len(c["needs"]) == 1 for c in customers)  # app-only customers too, as before
    shown = defaultdict(int)
    for r in map(json.loads, (tmp_path / "impressions.jsonl").open()):
        shown[(r["customer_id"], r["ts"])] += 1
    assert set(shown.values()) == {4}


def test_unknown_world_and_intent_are_rejected():
    with pytest.raises(ValueError):
        get_world("nowhere")
    with pytest.raises(ValueError):
        generate(GeneratorConfig(visitors=10, intent_mix={"no_such_intent": 1.0}), "/tmp/never-written")


def test_training_code_never_reads_truth():
    import pathlib

    root = pathlib.Path(bank.__file__).parent
    readers = [str(p.relative_to(root)) for p in root.rglob("*.py") if '/ "truth"' in p.read_text()]
    # the writer, the evaluation-only loader (hidden intents, the world's name), and the paper evaluation (its
    # report and diagnostic oracles)
    assert sorted(readers) == ["evaluation/oracle.py", "evaluation/report.py", "sessions.py", "synthetic.py"]


def test_only_the_generator_and_the_oracle_import_the_worlds():
    import pathlib
    import re

    root = pathlib.Path(bank.__file__).parent
    pattern = re.compile(r"^\s*(from training(\.worlds|\.bank| import bank)|import training\.(worlds|bank))", re.M)
    users = sorted(str(p.relative_to(root)) for p in root.rglob("*.py")
                   if pattern.search(p.read_text()) and not str(p.relative_to(root)).startswith("worlds/"))
    # the two command lines check a --world / --second-world against the registry's names, nothing more
    assert set(users) <= {"synthetic.py", "evaluation/oracle.py", "bank.py", "cli.py", "evaluation/cli.py"}
    cli = (root / "cli.py").read_text()
    assert "from training.worlds import DEFAULT_WORLD, WORLD_NAMES" in cli and "get_world" not in cli
    eval_cli = (root / "evaluation" / "cli.py").read_text()
    assert "from training.worlds import WORLD_NAMES" in eval_cli and "get_world" not in eval_cli
