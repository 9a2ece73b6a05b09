"""Values pasted into MLflow search filters are quoted (components/tracking.filter_value): a model name
with a quote in it once crashed register at its last step ("Invalid clause(s) in filter string")."""

import pytest
from mlflow import MlflowClient
from mlflow.utils.search_utils import SearchModelVersionUtils

from components.errors import UserError
from components.register import registered_before
from components.tracking import filter_value


@pytest.mark.parametrize("value", ["digits-classifier", "team's model", 'say "hi"', "a/b", ""])
def test_a_quoted_value_parses_back_to_itself(value):
    [clause] = SearchModelVersionUtils.parse_search_filter(f"name = {filter_value(value)}")
    assert clause["value"] == value


def test_a_value_with_both_quotes_is_refused_in_one_line():
    with pytest.raises(UserError, match="holds both ' and \", which an MLflow search filter cannot quote"):
        filter_value("""it's "x\"""")


def test_register_looks_up_a_model_whose_name_holds_a_quote(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client.create_registered_model("team's-model")
    assert registered_before(client, "team's-model", "key") is None
