"""The neighbourhood models' scoring kernel against scipy's sparse product, and the span
encoder's splicing of a shared encoded value."""

import json

import numpy as np
import scipy.sparse as sp

from coachrec.models.row_sum import weighted_row_sums
from coachrec.tracing.jsonenc import Encoded


def test_weighted_row_sums_equal_the_sparse_product_with_repeated_and_empty_rows() -> None:
    rng = np.random.default_rng(0)
    dense = sp.random(30, 40, density=0.2, random_state=1, dtype=np.float64).toarray()
    dense[5] = 0  # an empty row
    m = sp.csr_matrix(dense)
    requests = np.array([0, 0, 0, 2, 2, 3])  # request 1 has no rows; row 7 twice in request 0
    rows = np.array([7, 7, 5, 1, 29, 0])
    weights = rng.random(len(rows))
    x = sp.csr_matrix((weights, (requests, rows)), shape=(4, 30))
    got = weighted_row_sums(m, requests, rows, weights, 4)
    assert got.shape == (4, 40)
    np.testing.assert_allclose(got, (x @ m).toarray(), rtol=1e-12, atol=0)
    assert not got[1].any()
    assert weighted_row_sums(m, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0), 2).shape == (2, 40)


def test_encoded_join_splices_a_shared_value_into_valid_json() -> None:
    shared = Encoded(["318", 'a "quoted" id'])
    joined = Encoded.join({"retriever": "item-kNN", "history": shared, "none": None, "x": np.array([1.5, np.nan])})
    assert joined.text is not None
    assert json.loads(joined.text) == {
        "retriever": "item-kNN", "history": ["318", 'a "quoted" id'], "none": None, "x": [1.5, None]
    }  # fmt: skip
