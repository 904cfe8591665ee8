from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from airflow_claude_batches.governance.cost import DEFAULT_PRICES
from airflow_claude_batches.governance.policy import (
    AccountPolicy,
    Governance,
    JobTypePolicy,
    PolicyError,
    TeamPolicy,
    load_policy,
)

REPO = Path(__file__).resolve().parents[3]
EXAMPLE = REPO / "dags" / "claude_batches_policy.yaml"

JOB_TYPE = {
    "allowed_models": ["claude-haiku-4-5"],
    "allowed_fields": ["system"],
    "max_tokens_cap": 256,
    "max_requests": 10,
    "max_bytes": 10_000,
    "max_job_cost_usd": 1.0,
}


def document(**changes) -> dict:
    doc = {
        "teams": {"marketing": {}, "support": {"daily_budget_usd": 10}},
        "job_types": {"enrichment": {**JOB_TYPE, "teams": ["marketing"]}, "anyone": dict(JOB_TYPE)},
    }
    doc.update(changes)
    return doc


def write(tmp_path: Path, content: dict | str, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content))
    return path


def load_error(tmp_path: Path, content: dict | str) -> str:
    path = write(tmp_path, content)
    with pytest.raises(PolicyError) as excinfo:
        load_policy(path)
    message = str(excinfo.value)
    assert message.startswith(str(path)), message
    return message


class TestExampleFile:
    def test_loads(self):
        governance = load_policy(EXAMPLE)
        assert set(governance.teams) == {"marketing", "support"}
        assert {t.pool for t in governance.teams.values()} == {
            "claude_batches_marketing",
            "claude_batches_support",
        }
        enrichment = governance.job_types["enrichment"]
        assert enrichment.teams == ["marketing"]
        assert enrichment.allowed_models == ["claude-haiku-4-5", "claude-sonnet-4-5"]
        assert enrichment.allowed_fields == ["system", "temperature", "metadata", "stop_sequences"]
        assert enrichment.max_tokens_cap == 1024
        classification = governance.job_types["classification"]
        assert classification.teams == ["support"]
        assert classification.time_sensitive is True
        assert classification.allowed_models == ["claude-haiku-4-5"]
        assert classification.allowed_fields == ["system", "temperature"]
        assert classification.max_tokens_cap == 256
        assert "tools" not in classification.allowed_fields
        assert governance.account.queue_limit == 100_000
        assert governance.source == str(EXAMPLE)

    def test_resolves_the_example_pairs(self):
        governance = load_policy(EXAMPLE)
        assert governance.resolve("marketing", "enrichment")[1].name == "enrichment"
        assert governance.resolve("support", "classification")[0].name == "support"


class TestModels:
    def test_defaults(self):
        governance = Governance.model_validate(document())
        marketing = governance.teams["marketing"]
        assert marketing.name == "marketing"
        assert marketing.pool == "claude_batches_marketing"
        assert marketing.max_concurrent_batches == 2
        assert marketing.daily_budget_usd is None
        job = governance.job_types["anyone"]
        assert (job.teams, job.error_ratio_alert, job.retention_days, job.archive, job.time_sensitive) == (
            [],
            0.05,
            28,
            True,
            False,
        )
        assert governance.account == AccountPolicy()
        assert governance.account.admission_max_wait_seconds == 3600
        assert governance.prices == {}

    def test_empty_yaml_entry_takes_all_defaults(self, tmp_path):
        content = "teams:\n  marketing:\njob_types: {}\n"
        assert load_policy(write(tmp_path, content)).teams["marketing"].pool == "claude_batches_marketing"

    def test_frozen(self):
        governance = Governance.model_validate(document())
        with pytest.raises(ValueError, match="frozen"):
            governance.teams["marketing"].max_concurrent_batches = 5  # type: ignore[misc]

    def test_prices_override_defaults_and_add_models(self):
        doc = document(prices={"claude-next": {"input": 2, "output": 10}})
        doc["job_types"]["anyone"]["allowed_models"] = ["claude-next"]
        governance = Governance.model_validate(doc)
        assert governance.prices["claude-next"].cache_read == pytest.approx(0.2)


class TestLoadErrors:
    def test_bad_yaml(self, tmp_path):
        assert "not valid YAML" in load_error(tmp_path, "teams: [marketing\n")

    def test_duplicate_key(self, tmp_path):
        content = "teams:\n  marketing: {}\n  marketing: {max_concurrent_batches: 5}\njob_types: {}\n"
        message = load_error(tmp_path, content)
        assert "not valid YAML" in message
        assert "duplicate key 'marketing'" in message

    @pytest.mark.parametrize(("content", "what"), [("", "an empty file"), ("- a\n- b\n", "list")])
    def test_not_a_mapping(self, tmp_path, content, what):
        assert what in load_error(tmp_path, content)

    def test_python_tags_are_refused(self, tmp_path):
        assert "not valid YAML" in load_error(tmp_path, "teams: !!python/object/apply:os.getcwd []\n")

    def test_unknown_top_level_key(self, tmp_path):
        message = load_error(tmp_path, document(budgets={}))
        assert "budgets: Extra inputs are not permitted" in message

    def test_source_cannot_come_from_the_file(self, tmp_path):
        assert "source: Extra inputs are not permitted" in load_error(tmp_path, document(source="x"))

    def test_unknown_key_in_entries(self, tmp_path):
        doc = document()
        doc["teams"]["marketing"]["budget"] = 5
        doc["job_types"]["enrichment"]["tools"] = ["x"]
        doc["account"] = {"queue": 5}
        message = load_error(tmp_path, doc)
        assert "teams.marketing.budget: Extra inputs are not permitted" in message
        assert "job_types.enrichment.tools: Extra inputs are not permitted" in message
        assert "account.queue: Extra inputs are not permitted" in message

    @pytest.mark.parametrize("field", sorted(JOB_TYPE))
    def test_missing_required_job_type_field(self, tmp_path, field):
        doc = document()
        del doc["job_types"]["enrichment"][field]
        assert f"job_types.enrichment.{field}: Field required" in load_error(tmp_path, doc)

    def test_missing_sections(self, tmp_path):
        message = load_error(tmp_path, {"account": {}})
        assert "teams: Field required" in message
        assert "job_types: Field required" in message

    @pytest.mark.parametrize(
        ("section", "entry", "field", "value", "expected"),
        [
            ("job_types", "enrichment", "max_tokens_cap", 0, "Input should be greater than 0"),
            ("job_types", "enrichment", "max_requests", 0, "Input should be greater than or equal to 1"),
            ("job_types", "enrichment", "max_bytes", -1, "Input should be greater than 0"),
            ("job_types", "enrichment", "max_job_cost_usd", 0, "Input should be greater than 0"),
            ("job_types", "enrichment", "retention_days", 0, "greater than or equal to 1"),
            ("job_types", "enrichment", "retention_days", 30, "less than or equal to 29"),
            ("job_types", "enrichment", "error_ratio_alert", 1.5, "less than or equal to 1"),
            ("job_types", "enrichment", "error_ratio_alert", -0.1, "greater than or equal to 0"),
            ("job_types", "enrichment", "allowed_models", [], "at least 1 item"),
            ("job_types", "enrichment", "max_tokens_cap", "lots", "valid integer"),
            ("teams", "marketing", "max_concurrent_batches", 0, "greater than or equal to 1"),
            ("teams", "marketing", "daily_budget_usd", -5, "greater than or equal to 0"),
        ],
    )
    def test_field_constraints(self, tmp_path, section, entry, field, value, expected):
        doc = document()
        doc[section][entry][field] = value
        message = load_error(tmp_path, doc)
        assert f"{section}.{entry}.{field}: " in message
        assert expected in message

    def test_error_format_names_file_entry_and_field(self, tmp_path):
        doc = document()
        doc["job_types"]["enrichment"]["max_tokens_cap"] = 0
        path = write(tmp_path, doc, name="claude_batches_policy.yaml")
        with pytest.raises(PolicyError) as excinfo:
            load_policy(path)
        assert str(excinfo.value) == (
            f"{path}: job_types.enrichment.max_tokens_cap: Input should be greater than 0"
        )

    @pytest.mark.parametrize("team", ["Marketing", "mark_eting", "mark-eting", "a" * 17, "9lives"])
    def test_team_name_must_fit_custom_ids(self, tmp_path, team):
        assert f"teams.{team}.name: String should match pattern" in load_error(
            tmp_path, document(teams={team: {}})
        )

    def test_name_must_match_key(self, tmp_path):
        doc = document()
        doc["teams"]["marketing"]["name"] = "support"
        assert "teams.marketing.name: 'support' differs from its key 'marketing'" in load_error(tmp_path, doc)

    def test_unknown_team_in_job_type(self, tmp_path):
        doc = document()
        doc["job_types"]["enrichment"]["teams"] = ["marketing", "finance"]
        message = load_error(tmp_path, doc)
        assert "job_types.enrichment.teams: team 'finance' is not registered" in message
        assert "marketing, support" in message

    def test_model_without_a_price(self, tmp_path):
        doc = document()
        doc["job_types"]["enrichment"]["allowed_models"] = ["claude-haiku-4-5", "claude-mystery"]
        message = load_error(tmp_path, doc)
        assert "job_types.enrichment.allowed_models: no price known for model 'claude-mystery'" in message

    def test_pools_must_be_unique(self, tmp_path):
        doc = document()
        doc["teams"]["support"]["pool"] = "claude_batches_marketing"
        message = load_error(tmp_path, doc)
        assert (
            "teams.support.pool: pool 'claude_batches_marketing' is already the pool of team 'marketing'"
            in (message)
        )

    def test_reports_every_problem_at_once(self, tmp_path):
        doc = document()
        doc["job_types"]["enrichment"]["teams"] = ["finance"]
        doc["job_types"]["anyone"]["allowed_models"] = ["claude-mystery"]
        assert len(load_error(tmp_path, doc).splitlines()) == 2

    def test_missing_file(self, tmp_path):
        with pytest.raises(PolicyError, match=r"governance file not found.*policy_file"):
            load_policy(tmp_path / "nope.yaml")


class TestConfiguredPath:
    def test_path_from_airflow_config(self, monkeypatch):
        monkeypatch.setenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", str(EXAMPLE))
        assert load_policy().source == str(EXAMPLE)

    @pytest.mark.parametrize("path", [None, ""])
    def test_nothing_configured(self, monkeypatch, path):
        monkeypatch.delenv("AIRFLOW__CLAUDE_BATCHES__POLICY_FILE", raising=False)
        with pytest.raises(PolicyError) as excinfo:
            load_policy(path)
        message = str(excinfo.value)
        assert "[claude_batches] policy_file" in message
        assert "AIRFLOW__CLAUDE_BATCHES__POLICY_FILE" in message


class TestCache:
    def test_same_file_is_parsed_once(self, tmp_path):
        path = write(tmp_path, document())
        assert load_policy(path) is load_policy(str(path))

    def test_changed_file_is_picked_up(self, tmp_path):
        path = write(tmp_path, document())
        before = load_policy(path)
        doc = document()
        doc["teams"]["marketing"]["max_concurrent_batches"] = 7
        write(tmp_path, doc)
        stat = path.stat()
        # Same size would still differ by mtime; move it on explicitly so the test can't race the clock.
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        after = load_policy(path)
        assert after is not before
        assert after.teams["marketing"].max_concurrent_batches == 7

    def test_a_broken_edit_is_reported_not_served_from_cache(self, tmp_path):
        path = write(tmp_path, document())
        load_policy(path)
        path.write_text("teams: [")
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000_000))
        with pytest.raises(PolicyError, match="not valid YAML"):
            load_policy(path)


class TestResolve:
    @pytest.fixture
    def governance(self):
        return Governance.model_validate({**document(), "source": "policy.yaml"})

    def test_resolves(self, governance):
        team, job = governance.resolve("marketing", "enrichment")
        assert (team.name, job.name) == ("marketing", "enrichment")

    def test_empty_teams_means_every_team(self, governance):
        assert governance.resolve("support", "anyone")[1].name == "anyone"

    def test_unregistered_team(self, governance):
        with pytest.raises(
            PolicyError,
            match=r"policy.yaml: team 'finance' is not registered \(registered teams: marketing, support\)",
        ):
            governance.resolve("finance", "enrichment")

    def test_unknown_job_type(self, governance):
        with pytest.raises(
            PolicyError, match=r"unknown job type 'scoring' \(job types: enrichment, anyone\)"
        ):
            governance.resolve("marketing", "scoring")

    def test_job_type_not_open_to_team(self, governance):
        with pytest.raises(
            PolicyError,
            match=r"job type 'enrichment' is not open to team 'support' \(teams allowed: marketing\)",
        ):
            governance.resolve("support", "enrichment")


class TestCheckRequest:
    @pytest.fixture
    def job(self):
        return JobTypePolicy.model_validate({**JOB_TYPE, "name": "enrichment"})

    @staticmethod
    def params(**changes):
        params = {
            "model": "claude-haiku-4-5",
            "max_tokens": 256,
            "messages": [{"role": "user", "content": "hi"}],
            "system": "be brief",
        }
        params.update(changes)
        return {k: v for k, v in params.items() if v is not ...}

    def test_valid_request(self, job):
        assert job.check_request(self.params()) == []

    def test_custom_id_is_left_to_the_operator(self, job):
        assert job.check_request(self.params(custom_id="anything at all")) == []

    @pytest.mark.parametrize(
        ("changes", "expected"),
        [
            ({"model": ...}, "model is missing"),
            (
                {"model": "claude-opus-4-5"},
                "model 'claude-opus-4-5' is not allowed for job type 'enrichment' "
                "(allowed: claude-haiku-4-5)",
            ),
            ({"model": "claude-haiku-4-5-20251001"}, "model 'claude-haiku-4-5-20251001' is not allowed"),
            ({"max_tokens": ...}, "max_tokens is missing"),
            ({"max_tokens": 0}, "max_tokens must be a positive int, got 0"),
            ({"max_tokens": -3}, "max_tokens must be a positive int, got -3"),
            ({"max_tokens": "256"}, "max_tokens must be a positive int, got '256'"),
            ({"max_tokens": 12.0}, "max_tokens must be a positive int, got 12.0"),
            ({"max_tokens": True}, "max_tokens must be a positive int, got True"),
            ({"max_tokens": 257}, "max_tokens 257 is over the cap of 256 for job type 'enrichment'"),
            ({"messages": ...}, "messages is missing"),
            ({"messages": []}, "messages must be a non-empty list"),
            ({"messages": "hi"}, "messages must be a non-empty list"),
            ({"messages": {"role": "user"}}, "messages must be a non-empty list"),
            (
                {"tools": [], "top_k": 5},
                "fields not allowed for job type 'enrichment': tools, top_k "
                "(allowed besides model, max_tokens, messages: system)",
            ),
        ],
    )
    def test_violation(self, job, changes, expected):
        problems = job.check_request(self.params(**changes))
        assert len(problems) == 1, problems
        assert problems[0].startswith(expected)

    def test_no_optional_fields_allowed(self):
        job = JobTypePolicy.model_validate({**JOB_TYPE, "name": "bare", "allowed_fields": []})
        assert job.check_request(self.params()) == [
            "fields not allowed for job type 'bare': system "
            "(allowed besides model, max_tokens, messages: none)"
        ]

    def test_reports_every_violation(self, job):
        assert len(job.check_request({"temperature": 2})) == 4

    def test_not_a_mapping(self, job):
        assert job.check_request(["model"]) == [  # type: ignore[arg-type]
            "params must be a mapping of Messages parameters, got list"
        ]


def test_team_policy_standalone():
    team = TeamPolicy.model_validate({"name": "finance", "monthly_budget_usd": 10})
    assert team.pool == "claude_batches_finance"


def test_default_prices_cover_the_example_models():
    governance = load_policy(EXAMPLE)
    models = {m for job in governance.job_types.values() for m in job.allowed_models}
    assert models <= set(DEFAULT_PRICES)


def test_policy_error_is_a_value_error():
    assert issubclass(PolicyError, ValueError)


def test_example_file_documents_each_field():
    text = EXAMPLE.read_text()
    for field in [*TeamPolicy.model_fields, *JobTypePolicy.model_fields, *AccountPolicy.model_fields]:
        if field != "name":
            assert f"{field}:" in text, field
    assert text.count("#") > 30


class TestPriority:
    def test_defaults_to_normal(self):
        job = JobTypePolicy(name="j", **JOB_TYPE)
        assert (job.priority, job.priority_rank, job.time_sensitive) == ("normal", 1, False)

    @pytest.mark.parametrize(
        ("fields", "priority", "rank"),
        [
            ({"priority": "time_sensitive"}, "time_sensitive", 0),
            ({"priority": "bulk"}, "bulk", 2),
            ({"time_sensitive": True}, "time_sensitive", 0),  # files written before priority load
            ({"time_sensitive": False}, "normal", 1),
            ({"time_sensitive": False, "priority": "bulk"}, "bulk", 2),
            ({"time_sensitive": True, "priority": "time_sensitive"}, "time_sensitive", 0),
        ],
    )
    def test_priority_class_and_rank(self, fields, priority, rank):
        job = JobTypePolicy(name="j", **JOB_TYPE, **fields)
        assert (job.priority, job.priority_rank, job.time_sensitive) == (priority, rank, rank == 0)

    def test_example_file_orders_support_before_marketing(self):
        jobs = load_policy(EXAMPLE).job_types
        assert jobs["classification"].priority_rank < jobs["enrichment"].priority_rank

    def test_a_contradiction_and_an_unknown_class_are_errors(self, tmp_path):
        contradiction = document()
        contradiction["job_types"]["anyone"].update(time_sensitive=True, priority="bulk")
        assert "time_sensitive: true contradicts priority 'bulk'" in load_error(tmp_path, contradiction)
        unknown = document()
        unknown["job_types"]["anyone"]["priority"] = "urgent"
        assert "job_types.anyone.priority: Input should be" in load_error(tmp_path, unknown)


class TestTeamDags:
    def test_strings_are_path_globs_in_any_bundle(self):
        team = TeamPolicy(name="alpha", dags=["alpha/**", {"bundle": "alpha-*"}])
        assert [(p.bundle, p.path) for p in team.dags] == [("*", "alpha/**"), ("alpha-*", "**")]

    @pytest.mark.parametrize("pattern", ["/etc/**", "../beta/**", "alpha/../../x.py", ""])
    def test_patterns_stay_inside_the_bundle(self, tmp_path, pattern):
        doc = document()
        doc["teams"]["marketing"]["dags"] = [pattern]
        assert "teams.marketing.dags.0.path" in load_error(tmp_path, doc)


def test_deep_nesting_is_a_clear_error(tmp_path):
    message = load_error(tmp_path, "teams: " + "[" * 5000 + "]" * 5000 + "\n")
    assert "nested deeper than 20 levels" in message and len(message) < 1000
