"""Gateway JSON of etcd 3.4 / 3.5 / 3.6 into typed models, and malformed answers into errors."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from etcdagent.errors import EtcdProtocolError
from etcdagent.models import Alarm, AlarmList, AlarmType, Member, MemberList, MemberStatus

ENDPOINT = "http://10.0.0.1:2379"

# Shapes as etcd 3.5.1 / 3.4.23 answer them (M1 is etcd's well-known default member ID).
M1 = 10276657743932975437  # 8e9e05c52164694d
M2 = 0x0B6E2F7A9C3D1E45  # etcdctl prints b6e2f7a9c3d1e45: 15 digits, no leading zero

STATUS_35 = {
    "header": {
        "cluster_id": "14841639068965178418",
        "member_id": str(M1),
        "revision": "1",
        "raft_term": "2",
    },
    "version": "3.5.1",
    "dbSize": "28672",
    "leader": str(M1),
    "raftIndex": "8",
    "raftTerm": "2",
    "raftAppliedIndex": "8",
    "dbSizeInUse": "16384",
}

# 3.4 omits every zero value: no revision on a fresh store, no errors, no isLearner.
STATUS_34_FOLLOWER = {
    "header": {"cluster_id": "14841639068965178418", "member_id": str(M2), "raft_term": "2"},
    "version": "3.4.23",
    "dbSize": "20480",
    "leader": str(M1),
    "raftIndex": "9",
    "raftTerm": "2",
    "raftAppliedIndex": "7",
    "dbSizeInUse": "16384",
}

STATUS_36 = {
    **STATUS_35,
    "version": "3.6.0",
    "dbSizeQuota": "2147483648",
    "storageVersion": "3.6.0",
    "isLearner": True,
}

MEMBER_LIST = {
    "header": {
        "cluster_id": "14841639068965178418",
        "member_id": str(M1),
        "raft_term": "2",
    },
    "members": [
        {
            "ID": str(M1),
            "name": "m1",
            "peerURLs": ["http://127.0.0.1:2380"],
            "clientURLs": ["http://127.0.0.1:2379"],
        },
        {
            "ID": str(M2),
            "name": "m2",
            "peerURLs": ["http://127.0.0.1:2382"],
            "clientURLs": ["http://127.0.0.1:2381"],
            "isLearner": True,
        },
        # added with `member add`, never started: no name, no client URLs
        {"ID": "255", "peerURLs": ["http://127.0.0.1:2384"]},
    ],
}


def test_status_35_strings_become_ints() -> None:
    status = MemberStatus.from_gateway(STATUS_35, endpoint=ENDPOINT)
    assert status.member_id == M1
    assert status.cluster_id == 14841639068965178418
    assert status.revision == 1
    assert status.version == "3.5.1"
    assert status.db_size == 28672
    assert status.db_size_in_use == 16384
    assert status.leader == M1
    assert status.raft_index == 8
    assert status.raft_term == 2
    assert status.raft_applied_index == 8
    assert status.is_leader is True
    assert status.is_learner is False
    assert status.db_size_quota == 0
    assert status.errors == ()
    assert status.alarms == ()
    assert status.apply_lag == 0


def test_status_34_omitted_zero_fields_default() -> None:
    status = MemberStatus.from_gateway(STATUS_34_FOLLOWER, endpoint=ENDPOINT)
    assert status.revision == 0
    assert status.is_learner is False
    assert status.errors == ()
    assert status.is_leader is False
    assert status.leader == M1
    assert status.apply_lag == 2


def test_status_36_quota_and_learner() -> None:
    status = MemberStatus.from_gateway(STATUS_36, endpoint=ENDPOINT)
    assert status.db_size_quota == 2 * 1024**3
    assert status.is_learner is True


def test_status_with_only_a_header() -> None:
    status = MemberStatus.from_gateway({"header": {"member_id": "7"}})
    assert (status.member_id, status.db_size, status.leader, status.version) == (7, 0, 0, "")
    assert status.is_leader is False  # leader 0 means "none", even though member_id != 0


def test_alarms_from_status_errors_with_trailing_space() -> None:
    payload = {
        **STATUS_35,
        "errors": [f"memberID:{M2} alarm:NOSPACE ", f"memberID:{M1} alarm:CORRUPT "],
    }
    status = MemberStatus.from_gateway(payload, endpoint=ENDPOINT)
    assert status.alarms == (
        Alarm(member_id=M2, alarm=AlarmType.NOSPACE),
        Alarm(member_id=M1, alarm=AlarmType.CORRUPT),
    )
    assert str(status.alarms[0]) == "NOSPACE@b6e2f7a9c3d1e45"


def test_status_errors_that_are_not_alarms_are_kept_but_not_alarms() -> None:
    payload = {**STATUS_35, "errors": ["something else happened", "memberID:x alarm:NOSPACE"]}
    status = MemberStatus.from_gateway(payload)
    assert status.errors == ("something else happened", "memberID:x alarm:NOSPACE")
    assert status.alarms == ()


def test_member_list_35() -> None:
    members = MemberList.from_gateway(MEMBER_LIST, endpoint=ENDPOINT)
    assert members.cluster_id == 14841639068965178418
    assert members.member_id == M1
    m1, m2, unstarted = members.members
    assert m1.id == M1
    assert m1.name == "m1"
    assert m1.peer_urls == ("http://127.0.0.1:2380",)
    assert m1.client_urls == ("http://127.0.0.1:2379",)
    assert m1.is_learner is False
    assert m1.started is True
    assert m2.is_learner is True
    assert unstarted.started is False
    assert unstarted.name == ""
    assert unstarted.client_urls == ()
    assert unstarted.display_name == "(unstarted ff)"


@pytest.mark.parametrize(
    ("member_id", "shown"),
    [
        (M1, "8e9e05c52164694d"),
        (M2, "b6e2f7a9c3d1e45"),
        (255, "ff"),
        (0x0ABC, "abc"),  # no leading zeros, as etcdctl prints
        (2**64 - 1, "ffffffffffffffff"),
    ],
)
def test_member_id_hex_as_etcdctl_prints(member_id: int, shown: str) -> None:
    member = Member.from_gateway({"ID": str(member_id), "name": "x"})
    assert member.id_hex == shown
    assert Alarm(member_id=member_id, alarm=AlarmType.NOSPACE).member_id_hex == shown


def test_member_list_empty_answer() -> None:
    members = MemberList.from_gateway({})
    assert members.members == ()
    assert members.cluster_id == 0


def test_alarm_list() -> None:
    alarms = AlarmList.from_gateway(
        {"header": {}, "alarms": [{"memberID": str(M2), "alarm": "NOSPACE"}, {"alarm": "CORRUPT"}]}
    )
    assert alarms.alarms == (
        Alarm(member_id=M2, alarm=AlarmType.NOSPACE),
        Alarm(member_id=0, alarm=AlarmType.CORRUPT),
    )
    assert AlarmList.from_gateway({}).alarms == ()  # 3.4 answers {} when there is none


def test_unknown_alarm_kind_is_a_protocol_error() -> None:
    with pytest.raises(EtcdProtocolError, match=ENDPOINT):
        AlarmList.from_gateway({"alarms": [{"alarm": "BOGUS"}]}, endpoint=ENDPOINT)


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({}, "header.member_id"),
        ({"header": {}}, "header.member_id"),
        ({"header": {"cluster_id": "1"}}, "header.member_id"),
        ({"header": {"member_id": "-1"}}, "header.member_id"),
        ({"header": {"member_id": "abc"}}, "header.member_id"),
        ({"header": {"member_id": "1"}, "dbSize": "-5"}, "dbSize"),
        ({"header": {"member_id": "1"}, "dbSize": "1.5"}, "dbSize"),
        ({"header": {"member_id": "1"}, "dbSize": 1.5}, "dbSize"),
        ({"header": {"member_id": "1"}, "dbSize": [1]}, "dbSize"),
        ({"header": {"member_id": "1"}, "raftIndex": "-1"}, "raftIndex"),
        ({"header": {"member_id": "1"}, "version": 35}, "version"),
        ({"header": {"member_id": "1"}, "errors": "alarm:NOSPACE"}, "errors"),
        ({"header": {"member_id": "1"}, "errors": [1]}, "errors"),
        ([], "body"),
        (None, "body"),
        ("<html>502 Bad Gateway</html>", "body"),
    ],
)
def test_malformed_status_is_a_protocol_error(payload: Any, where: str) -> None:
    with pytest.raises(EtcdProtocolError) as info:
        MemberStatus.from_gateway(payload, endpoint=ENDPOINT)
    message = str(info.value)
    assert message.startswith(ENDPOINT + ":")
    assert "MemberStatus" in message
    assert where in message
    assert info.value.endpoint == ENDPOINT


@pytest.mark.parametrize(
    ("payload", "where"),
    [
        ({"members": "m1"}, "members"),
        ({"members": [{}]}, "members.0.ID"),
        ({"members": [{"ID": "-3"}]}, "members.0.ID"),
        ({"members": [None]}, "members.0"),
        ({"members": [{"ID": "1", "clientURLs": "http://x:1"}]}, "members.0.clientURLs"),
        ({"header": {"member_id": "-1"}}, "header.member_id"),
    ],
)
def test_malformed_member_list_is_a_protocol_error(payload: Any, where: str) -> None:
    with pytest.raises(EtcdProtocolError) as info:
        MemberList.from_gateway(payload, endpoint=ENDPOINT)
    assert str(info.value).startswith(ENDPOINT + ":")
    assert where in str(info.value)


def test_protocol_error_without_endpoint_says_etcd() -> None:
    with pytest.raises(EtcdProtocolError, match=r"^etcd: "):
        MemberStatus.from_gateway({})


# -- property: nothing but EtcdProtocolError escapes --------------------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.integers(min_value=-(2**70), max_value=2**70).map(str)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
STATUS_KEYS = [
    "version",
    "dbSize",
    "dbSizeInUse",
    "dbSizeQuota",
    "leader",
    "raftIndex",
    "raftTerm",
    "raftAppliedIndex",
    "errors",
    "isLearner",
]
status_like = st.fixed_dictionaries(
    {},
    optional={
        "header": st.fixed_dictionaries(
            {},
            optional={"member_id": json_values, "cluster_id": json_values, "revision": json_values},
        )
        | json_values,
        **dict.fromkeys(STATUS_KEYS, json_values),
    },
)
member_like = st.fixed_dictionaries(
    {},
    optional={
        "ID": json_values,
        "name": json_values,
        "peerURLs": json_values,
        "clientURLs": json_values,
        "isLearner": json_values,
    },
)
member_list_like = st.fixed_dictionaries(
    {},
    optional={"header": json_values, "members": st.lists(member_like, max_size=3) | json_values},
)


@given(json_values | status_like)
def test_any_status_payload_parses_or_is_a_protocol_error(payload: Any) -> None:
    try:
        status = MemberStatus.from_gateway(payload, endpoint=ENDPOINT)
    except EtcdProtocolError as exc:
        assert str(exc).startswith(ENDPOINT)
        return
    assert status.member_id >= 0
    assert status.db_size >= 0
    _ = status.alarms, status.is_leader, status.apply_lag


@given(json_values | member_list_like)
def test_any_member_list_payload_parses_or_is_a_protocol_error(payload: Any) -> None:
    try:
        members = MemberList.from_gateway(payload, endpoint=ENDPOINT)
    except EtcdProtocolError as exc:
        assert str(exc).startswith(ENDPOINT)
        return
    for member in members.members:
        assert member.id >= 0
        assert member.id_hex == f"{member.id:x}"
        assert member.display_name
