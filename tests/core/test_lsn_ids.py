"""Lsn text form, parsing, segment helpers; tenant/timeline/node ids (reference §1.1, §1.5)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from safekeeper_recovery.core import (
    INVALID_LSN,
    MAX_LSN,
    XLOG_BLCKSZ,
    Lsn,
    NodeId,
    TenantId,
    TenantTimelineId,
    TimelineId,
    segment_file_name,
)
from safekeeper_recovery.testing import MiB

from ._strategies import U32, U64, lsns

SEG_SIZES = st.sampled_from([MiB << k for k in range(11)])  # 1 MiB .. 1 GiB

# ---- Lsn: text form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0x16B9188, "0/16B9188"),
        (1 << 32, "1/0"),
        (0, "0/0"),
        (0xABCDEF01_0000000A, "ABCDEF01/A"),
        (U64, "FFFFFFFF/FFFFFFFF"),
    ],
)
def test_lsn_str_is_upper_case_hex_without_padding(value: int, text: str) -> None:
    assert str(Lsn(value)) == text
    assert repr(Lsn(value)) == f"Lsn({text})"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0/16B9188", 0x16B9188),
        ("0/16b9188", 0x16B9188),
        ("aBcDeF01/a", 0xABCDEF01_0000000A),
        ("00000001/00000000", 1 << 32),
        ("FFFFFFFF/FFFFFFFF", U64),
        (" 1/0\n", 1 << 32),
    ],
)
def test_lsn_parse_accepts_either_case_padding_and_surrounding_whitespace(
    text: str, value: int
) -> None:
    parsed = Lsn.parse(text)
    assert parsed == value
    assert type(parsed) is Lsn


@pytest.mark.parametrize(
    "text",
    [
        "",
        "1",
        "16B9188",
        "/",
        " / ",
        "1/",
        "/1",
        "1/2/3",
        "0x1/2",
        "1/0x2",
        "G/0",
        "0/g",
        "100000000/0",
        "0/100000000",
        "-1/0",
        "+1/0",
        "1_0/0",
        "1 /0",
        "1/ 0",
        "\u0661/0",  # ARABIC-INDIC DIGIT ONE
        "\uff11/0",  # FULLWIDTH DIGIT ONE
    ],
)
def test_lsn_parse_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid LSN"):
        Lsn.parse(text)


@given(lsns)
def test_lsn_text_round_trips(lsn: Lsn) -> None:
    assert Lsn.parse(str(lsn)) == lsn
    assert Lsn.parse(str(lsn).lower()) == lsn


@given(st.integers(0, U32), st.integers(0, U32))
def test_lsn_parse_combines_high_and_low_halves(hi: int, lo: int) -> None:
    assert Lsn.parse(f"{hi:x}/{lo:08X}") == (hi << 32) | lo


# ---- Lsn: range and arithmetic -----------------------------------------------------------


@pytest.mark.parametrize("value", [-1, 2**64, 2**80])
def test_lsn_outside_u64_raises_overflow(value: int) -> None:
    with pytest.raises(OverflowError):
        Lsn(value)


def test_lsn_arithmetic_stays_lsn_and_raises_on_overflow() -> None:
    assert INVALID_LSN == 0
    assert MAX_LSN == U64
    assert type(Lsn(5) + 3) is Lsn
    assert type(Lsn(5) - 3) is Lsn
    assert Lsn(5) + 3 == 8
    assert Lsn(5) - 5 == INVALID_LSN
    with pytest.raises(OverflowError):
        MAX_LSN + 1
    with pytest.raises(OverflowError):
        Lsn(0) - 1


def test_lsn_orders_numerically() -> None:
    assert Lsn.parse("0/FFFFFFFF") < Lsn.parse("1/0") < Lsn.parse("1/1")
    assert sorted([Lsn(3), Lsn(1), Lsn(2)]) == [1, 2, 3]


# ---- Lsn: segments -----------------------------------------------------------------------


def test_segment_helpers_on_a_known_position() -> None:
    seg = 16 * MiB
    lsn = Lsn.parse("1/2345678")  # 0x1_02345678
    assert lsn.segment_number(seg) == 0x1_02345678 // seg == 258
    assert lsn.segment_offset(seg) == 0x345678
    assert lsn.segment_lsn(seg) == Lsn.parse("1/2000000")
    assert type(lsn.segment_lsn(seg)) is Lsn
    assert lsn.block_offset() == 0x345678 % XLOG_BLCKSZ == 0x1678


@given(lsns, SEG_SIZES)
def test_segment_helpers_decompose_the_position(lsn: Lsn, seg: int) -> None:
    assert lsn.segment_lsn(seg) + lsn.segment_offset(seg) == lsn
    assert lsn.segment_number(seg) * seg == lsn.segment_lsn(seg)
    assert 0 <= lsn.segment_offset(seg) < seg
    assert 0 <= lsn.block_offset() < XLOG_BLCKSZ


@pytest.mark.parametrize(
    ("segno", "seg_size", "name"),
    [
        (0, 16 * MiB, "000000010000000000000000"),
        (1, 16 * MiB, "000000010000000000000001"),
        (255, 16 * MiB, "0000000100000000000000FF"),
        (256, 16 * MiB, "000000010000000100000000"),
        (4096, MiB, "000000010000000100000000"),
        (5, 1024 * MiB, "000000010000000100000001"),
    ],
)
def test_segment_file_name_follows_postgresql(segno: int, seg_size: int, name: str) -> None:
    assert segment_file_name(segno, seg_size) == name


def test_segment_file_name_carries_the_timeline_id() -> None:
    assert segment_file_name(1, 16 * MiB, tli=0x2A) == "0000002A0000000000000001"


@given(lsns, SEG_SIZES)
def test_segment_file_name_is_24_upper_hex_digits_and_decodes_back(lsn: Lsn, seg: int) -> None:
    segno = lsn.segment_number(seg)
    name = segment_file_name(segno, seg)
    assert len(name) == 24
    assert name == name.upper()
    assert int(name[:8], 16) == 1
    assert int(name[8:16], 16) * (2**32 // seg) + int(name[16:], 16) == segno


# ---- tenant and timeline ids -------------------------------------------------------------

HEX32 = "0123456789abcdef" * 2


@pytest.mark.parametrize("cls", [TenantId, TimelineId])
def test_hex_id_parses_32_hex_digits_either_case_and_displays_lower_case(
    cls: type[TenantId] | type[TimelineId],
) -> None:
    upper = cls.parse(HEX32.upper())
    assert str(upper) == HEX32
    assert upper == cls.parse(HEX32)
    assert upper.raw == bytes.fromhex(HEX32)
    assert repr(upper) == f"{cls.__name__}('{HEX32}')"


@pytest.mark.parametrize(
    "text",
    [
        "",
        HEX32[:31],
        HEX32 + "0",
        "../" + HEX32[3:],
        "..%2f" + HEX32[5:],
        "g" * 32,
        "0x" + HEX32[2:],
        " " + HEX32[1:],
        HEX32[:31] + "\n",
        "\u0660" * 32,  # ARABIC-INDIC DIGIT ZERO: str.isdigit() says yes, we say no
        "\uff10" * 32,  # FULLWIDTH DIGIT ZERO
        "-" + HEX32[1:],
    ],
)
@pytest.mark.parametrize("cls", [TenantId, TimelineId])
def test_hex_id_parse_is_strict(cls: type[TenantId] | type[TimelineId], text: str) -> None:
    with pytest.raises(ValueError, match="expected 32 hex digits"):
        cls.parse(text)


@pytest.mark.parametrize("raw", [b"", b"\0" * 15, b"\0" * 17])
def test_hex_id_needs_exactly_16_bytes(raw: bytes) -> None:
    with pytest.raises(ValueError, match="needs 16 bytes"):
        TenantId(raw)


@given(st.binary(min_size=16, max_size=16))
def test_hex_id_text_round_trips(raw: bytes) -> None:
    tid = TimelineId(raw)
    assert TimelineId.parse(str(tid)) == tid
    assert len(str(tid)) == 32


def test_hex_ids_compare_and_hash_by_type_and_bytes() -> None:
    a, b = TenantId.parse(HEX32), TenantId.parse(HEX32.upper())
    other = TenantId(b"\x01" * 16)
    assert a == b
    assert hash(a) == hash(b)
    assert a != other
    assert len({a, b, other}) == 2
    assert a != HEX32
    assert a != a.raw


def test_tenant_id_never_equals_timeline_id_with_the_same_bytes() -> None:
    tenant, timeline = TenantId.parse(HEX32), TimelineId.parse(HEX32)
    assert tenant != timeline
    assert timeline != tenant
    assert len({tenant, timeline}) == 2


def test_hex_ids_order_by_bytes_within_one_type_only() -> None:
    low, high = TenantId(b"\0" * 16), TenantId(b"\xff" * 16)
    assert low < high
    assert not high < low
    with pytest.raises(TypeError):
        _ = low < TimelineId(b"\xff" * 16)


def test_hex_id_is_immutable() -> None:
    tid = TenantId.parse(HEX32)
    with pytest.raises(AttributeError, match="immutable"):
        tid._raw = b"\0" * 16


def test_hex_id_generate_takes_its_randomness_as_an_argument() -> None:
    calls: list[int] = []

    def fake_randbytes(n: int) -> bytes:
        calls.append(n)
        return bytes(range(n))

    assert TenantId.generate(fake_randbytes) == TenantId(bytes(range(16)))
    assert calls == [16]


def test_tenant_timeline_id_displays_as_tenant_slash_timeline() -> None:
    ttid = TenantTimelineId(TenantId.parse(HEX32), TimelineId(b"\xab" * 16))
    assert str(ttid) == f"{HEX32}/{'ab' * 16}"
    assert ttid == TenantTimelineId(TenantId.parse(HEX32), TimelineId(b"\xab" * 16))
    assert ttid < TenantTimelineId(TenantId(b"\xff" * 16), TimelineId(b"\0" * 16))


# ---- node ids ----------------------------------------------------------------------------


def test_node_id_is_a_u64_displayed_in_decimal() -> None:
    assert str(NodeId(42)) == "42"
    assert repr(NodeId(42)) == "NodeId(42)"
    assert NodeId(U64) == U64
    assert NodeId(7) == NodeId(7)
    assert hash(NodeId(7)) == hash(7)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_node_id_outside_u64_is_refused(value: int) -> None:
    with pytest.raises(ValueError, match="u64"):
        NodeId(value)
