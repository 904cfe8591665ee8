from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_claude_batches.governance.ids import (
    CUSTOM_ID_PATTERN,
    MAX_INDEX,
    TEAM_PATTERN,
    InvalidCustomId,
    RecordRef,
    job_key,
    namespaced_id,
    parse_custom_id,
)

teams = st.from_regex(TEAM_PATTERN, fullmatch=True)
job_ids = st.text(min_size=1, max_size=200)
# Ids that sit near the slug rules: case, separators, runs, edges, length 32/33.
sluggy_job_ids = st.text(alphabet="aAbZ09-_ :.é", min_size=1, max_size=40)
indexes = st.integers(min_value=0, max_value=MAX_INDEX)


class TestJobKey:
    @pytest.mark.parametrize("job_id", ["reconcile-2026-06-06", "a", "0", "x" * 32, "a-b-c"])
    def test_short_canonical_slug_is_its_own_key(self, job_id):
        assert job_key(job_id) == job_id

    @pytest.mark.parametrize(
        "job_id",
        [
            "Reconcile 2026",
            "reconcile_2026",
            "billing:reconcile-2026-06-06:00042",
            "-leading",
            "trailing-",
            "double--dash",
            "x" * 33,
            "日本語",
        ],
    )
    def test_other_ids_get_a_readable_prefix_and_a_hash(self, job_id):
        key = job_key(job_id)
        assert key != job_id
        assert len(key) <= 32
        prefix, _, digest = key.rpartition("--")
        assert len(digest) == 12
        assert prefix

    def test_prefix_stays_readable(self):
        assert job_key("Reconcile 2026").startswith("reconcile-2026--")
        assert job_key("billing:reconcile-2026-06-06:00042").startswith("billing-reconcile--")
        assert job_key("日本語").startswith("id--")

    def test_case_and_separator_variants_do_not_collide(self):
        variants = ["reconcile-2026", "Reconcile 2026", "reconcile 2026", "RECONCILE-2026", "reconcile_2026"]
        assert len({job_key(j) for j in variants}) == len(variants)

    def test_long_ids_sharing_a_prefix_do_not_collide(self):
        base = "nightly-enrichment-for-the-marketing-team-"
        assert job_key(base + "2026-06-06") != job_key(base + "2026-06-07")

    def test_hashed_key_cannot_equal_a_plain_key(self):
        # A plain slug never holds "--", so a job id spelled like someone else's hashed key is hashed too.
        hashed = job_key("Reconcile 2026")
        assert job_key(hashed) != hashed

    def test_is_stable(self):
        assert job_key("Reconcile 2026") == job_key("Reconcile 2026")

    @pytest.mark.parametrize("job_id", ["", None, 42])
    def test_rejects_empty_or_non_string(self, job_id):
        with pytest.raises(ValueError, match="job id must be a non-empty string"):
            job_key(job_id)

    @given(st.one_of(job_ids, sluggy_job_ids))
    def test_key_shape(self, job_id):
        key = job_key(job_id)
        assert 1 <= len(key) <= 32
        assert set(key) <= set("abcdefghijklmnopqrstuvwxyz0123456789-")

    @settings(max_examples=300)
    @given(st.one_of(job_ids, sluggy_job_ids), st.one_of(job_ids, sluggy_job_ids))
    def test_injective(self, a, b):
        if a != b:
            assert job_key(a) != job_key(b)


class TestNamespacedId:
    def test_example_from_the_design(self):
        assert namespaced_id("billing", "reconcile-2026-06-06", 42) == "billing_reconcile-2026-06-06_00000042"

    def test_longest_id_fits_the_api_limit(self):
        custom_id = namespaced_id("a" * 16, "x" * 100, MAX_INDEX)
        assert len(custom_id) == 58
        assert CUSTOM_ID_PATTERN.fullmatch(custom_id)

    @pytest.mark.parametrize("team", ["", "Billing", "bill_ing", "bill-ing", "1billing", "a" * 17, None])
    def test_rejects_bad_team(self, team):
        with pytest.raises(ValueError, match="team must match"):
            namespaced_id(team, "job", 0)

    @pytest.mark.parametrize("index", [-1, MAX_INDEX + 1, 1.0, "1", True, None])
    def test_rejects_bad_index(self, index):
        with pytest.raises(ValueError, match=r"record index must be an int in 0\.\.99,999,999"):
            namespaced_id("billing", "job", index)

    def test_rejects_empty_job_id(self):
        with pytest.raises(ValueError, match="job id"):
            namespaced_id("billing", "", 0)

    @given(teams, st.one_of(job_ids, sluggy_job_ids), indexes)
    def test_matches_api_pattern_and_parses_back(self, team, job_id, index):
        custom_id = namespaced_id(team, job_id, index)
        assert CUSTOM_ID_PATTERN.fullmatch(custom_id)
        assert parse_custom_id(custom_id) == RecordRef(team=team, job_key=job_key(job_id), index=index)

    @settings(max_examples=300)
    @given(
        st.tuples(teams, st.one_of(job_ids, sluggy_job_ids), indexes),
        st.tuples(teams, st.one_of(job_ids, sluggy_job_ids), indexes),
    )
    def test_distinct_inputs_give_distinct_ids(self, a, b):
        if a != b:
            assert namespaced_id(*a) != namespaced_id(*b)


class TestParseCustomId:
    def test_parses(self):
        assert parse_custom_id("billing_reconcile-2026-06-06_00000042") == RecordRef(
            "billing", "reconcile-2026-06-06", 42
        )

    @pytest.mark.parametrize(
        ("custom_id", "message"),
        [
            ("billing:reconcile-2026-06-06:00042", "gives 1 part"),
            ("billing_reconcile_2026_00000001", "gives 4 part"),
            ("billing_00000001", "gives 2 part"),
            ("Billing_job_00000001", "team 'Billing'"),
            ("_job_00000001", "team ''"),
            ("billing_Job_00000001", "job key 'Job'"),
            ("billing__00000001", "job key ''"),
            ("billing_-job_00000001", "job key '-job'"),
            ("billing_a---b_00000001", "job key 'a---b'"),
            ("billing_" + "x" * 33 + "_00000001", "job key"),
            ("billing_job_42", "index '42' is not 8 digits"),
            ("billing_job_000000042", "index '000000042'"),
            ("billing_job_0000004a", "index '0000004a'"),
            ("billing_job_", "index ''"),
        ],
    )
    def test_rejects_foreign_ids_with_a_clear_message(self, custom_id, message):
        with pytest.raises(InvalidCustomId, match=message.replace("(", r"\(")):
            parse_custom_id(custom_id)

    def test_rejects_non_string(self):
        with pytest.raises(InvalidCustomId, match="must be a string"):
            parse_custom_id(42)  # type: ignore[arg-type]

    def test_invalid_custom_id_is_a_value_error(self):
        assert issubclass(InvalidCustomId, ValueError)
