"""Fixtures shared by the backend kernel tests (C++ and Triton, each against the reference):
the grid of update forms and resets every backend is checked on (:mod:`kernel_helpers`)."""

import pytest
from kernel_helpers import FORM_IDS, FORMS, RESET_IDS, RESETS


# session scope: hypothesis' @given tests take them (a function-scoped fixture is not reset
# between its examples); each is a constant per parameter
@pytest.fixture(scope="session", params=FORMS, ids=FORM_IDS)
def lif_form(request) -> tuple[str, bool]:
    """``(form, decay_input)``: the four update forms, spikingjelly with decay_input on and off."""
    return request.param


@pytest.fixture(scope="session", params=RESETS, ids=RESET_IDS)
def lif_reset(request) -> float | None:
    """``v_reset``: hard to 0, hard to a nonzero ``v_reset``, soft (None)."""
    return request.param
