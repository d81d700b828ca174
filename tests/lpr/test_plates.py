"""Plate text: normalisation, every shipped format, correction towards a format, fuzzy matching."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.config import LprConfig
from gateway.core.plates import (
    CONFUSABLES,
    DEFAULT_FORMATS,
    FORMAT_GROUPS,
    PlateFormat,
    best_format_reading,
    confusable_cost,
    distance,
    formats_for,
    is_valid,
    mask_classes,
    match,
    matching_formats,
    normalize,
    within_one_confusable,
)

# One real-looking plate (normalised) for every shipped format, and one it must refuse.
EXAMPLES = {
    "us-3l4n": ("ABC1234", "AB12345"),
    "us-ca": ("7ABC123", "ABC1234"),
    "us-3l3n": ("XYZ789", "XY7890"),
    "us-3n3l": ("123ABC", "12ABCD"),
    "us-1n2l4n": ("1AB2345", "1ABC234"),
    "us-generic": ("GWAGEN", "A"),
    "de": ("MAB1234", "M1234AB"),
    "de-eh": ("MAB123E", "MAB1234E"),
    "fr-siv": ("AB123CD", "AB1234C"),
    "it": ("EZ555AA", "EZ5555A"),
    "es": ("1234BCD", "123BCDF"),
    "nl-6": ("12ABC3", "1ABCD2"),
    "nl-7": ("1ABC23", "12ABC3"),
    "nl-8": ("AB123C", "ABC123"),
    "nl-9": ("A123BC", "AB123C"),
    "nl-10": ("ABC12D", "AB12CD"),
    "nl-11": ("1AB234", "1ABC23"),
    "nl-4": ("ABCD12", "ABC123"),
    "nl-5": ("12ABCD", "123ABC"),
    "pl-2-5n": ("WA56660", "WA5666A"),
    "pl-2-4n1l": ("WA1234K", "WA123KK"),
    "pl-2-3n2l": ("WA123KK", "WA12KKK"),
    "pl-2-1n1l3n": ("WA1K234", "WAK1234"),
    "pl-3-1l3n": ("KRAK123", "KRA1234"),
    "pl-3-2n2l": ("KRA12AB", "KRA1AB2"),
    "pl-3-1n1l2n": ("KRA1A23", "KRA12A3"),
    "pl-3-5n": ("KRA12345", "KRA1234"),
    "cz": ("1AB2345", "AB12345"),
    "sk": ("BA123AB", "BA1234B"),
    "eu-generic": ("BIMMIAN", "ABC"),
    "uk": ("AB12CDE", "AB123DE"),
    "uk-prefix": ("A123BCD", "AB12BCD"),
    "uk-suffix": ("ABC123D", "ABC123"),
    "br-old": ("AYO9034", "AYO9O34"),
    "br-mercosul": ("ABC1D23", "ABC1234"),
    "ar-old": ("ABC123", "AB1234"),
    "ar-mercosur": ("AD054JI", "ADO54JI"),
    "ar-moto-old": ("382EMY", "38EMY2"),
    "ar-moto-mercosur": ("A120EVP", "AB120EV"),
    "in": ("MH12DE1433", "M12DE1433"),
    "in-bh": ("22BH1234AB", "2BH1234AB"),
}

ALL_FORMATS = {fmt.name: fmt for group in FORMAT_GROUPS.values() for fmt in group}


def test_every_shipped_format_has_examples() -> None:
    assert set(EXAMPLES) == set(ALL_FORMATS)


@pytest.mark.parametrize(("name", "good", "bad"),
                         [(name, *pair) for name, pair in sorted(EXAMPLES.items())])
def test_shipped_format(name: str, good: str, bad: str) -> None:
    fmt = ALL_FORMATS[name]
    assert fmt.matches(good)
    assert not fmt.matches(bad)
    assert is_valid(good)
    assert name in matching_formats(good, tuple(ALL_FORMATS.values()))


def test_the_brief_countries_are_shipped() -> None:
    countries = {fmt.country for fmt in ALL_FORMATS.values()}
    assert {"US", "DE", "FR", "IT", "ES", "NL", "PL", "EU", "UK", "BR", "IN"} <= countries
    assert {"br-old", "br-mercosul"} <= {f.name for f in formats_for(["br"])}


def test_normalize() -> None:
    assert normalize("ab-123 cd") == "AB123CD"
    assert normalize("KÖ·AB 12") == "KOAB12"
    assert normalize("  --  ") == ""
    assert normalize("M AB 1234E") == "MAB1234E"


def test_formats_for_regions_and_a_lots_own() -> None:
    eu = formats_for(["eu"])
    assert {f.country for f in eu} == {"DE", "FR", "IT", "ES", "NL", "PL", "CZ", "SK", "EU"}
    own = formats_for(["fleet=LLN{3,4}", "staff=/STAFF[0-9]{2}/"])
    assert own[0].matches("AB123")
    assert own[0].matches("AB1234")
    assert not own[0].matches("AB12")
    assert own[1].matches("STAFF07")
    assert own[1].masks_of_length(7) == ()  # a regex validates, never corrects
    assert formats_for(["uk", "UK"]) == formats_for(["uk"])  # no duplicates


@pytest.mark.parametrize(("entry", "message"), [
    ("mars", "unknown plate format group 'mars'"),
    ("x=LLX", "unexpected 'X'"),
    ("x=LL[]", "unexpected '['"),
    ("x=L{3,1}", "bad repeat"),
    ("=LLL", "give name=MASK"),
    ("x=/[/", "bad regex"),
    ("x=A{1,9}A{1,9}A{1,9}A{1,9}", "expands to more than"),
])
def test_bad_format_entries(entry: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("{", r"\{").replace("[", r"\[")):
        formats_for([entry])


def test_a_mask_may_list_the_characters_a_position_takes() -> None:
    # German plates end in a letter only for E (electric) or H (historic): "BIMMI4N" is no
    # German plate, though "L{1,3}L{1,2}N{1,3}L" took it for one.
    de_eh = ALL_FORMATS["de-eh"]
    assert de_eh.matches("MAB123E")
    assert de_eh.matches("MAB123H")
    assert not de_eh.matches("BIMMI4N")
    assert {"".join(m) for m in de_eh.masks_of_length(6)} == {"LLNNN[EH]", "LLLNN[EH]",
                                                               "LLLLN[EH]"}
    assert mask_classes(("L", "L", "N", "N", "[EH]")) == "LLNNL"
    own = formats_for(["gate=LN{2}[0Q]{1,2}"])[0]
    assert own.matches("A120")
    assert own.matches("A12Q0")
    assert not own.matches("A12O")
    # Correction aims at a listed character only through its own confusables: O and D may
    # be a misread 0 (the cheapest), a 4 may not.
    for read in ("A12O", "A12D"):
        corrected = best_format_reading([(read, [0.9] * 4)], [own])
        assert corrected is not None
        assert corrected.text == "A120"
    assert best_format_reading([("A124", [0.9] * 4)], [own]) is None
    assert best_format_reading([("MAB123X", [0.9] * 7)], [de_eh]) is None


def test_a_polish_district_begins_with_its_voivodeships_letter() -> None:
    pl = formats_for(["pl"])
    assert is_valid("WA12345", pl)
    assert not is_valid("IA12345", pl)  # no voivodeship has I
    # So a read no longer becomes Polish through three swaps on a letter Poland never leads
    # with ("IKM80RA" from the Slovak vanity plate KMBORAK).
    assert best_format_reading([("IKMBORA", [0.9] * 7)], pl) is None


def test_a_format_needs_a_mask_or_a_regex() -> None:
    with pytest.raises(ValueError, match="exactly one"):
        PlateFormat("x", "X")


# --- correction -------------------------------------------------------------------------------

BR = formats_for(["br"])


@pytest.mark.parametrize(("read", "expected", "fmt"), [
    ("A8C1234", "ABC1234", "br-old"),  # 8 -> B where a letter belongs
    ("ABCI234", "ABC1234", "br-old"),  # I -> 1 where a digit belongs
    ("ABC1D2O", "ABC1D20", "br-mercosul"),
    ("0BC12S4", "OBC1254", "br-old"),
    ("ABC-1234", "ABC1234", "br-old"),
])
def test_correction_towards_a_format(read: str, expected: str, fmt: str) -> None:
    conf = [0.9] * len(read)
    correction = best_format_reading([(read, conf)], BR)
    assert correction is not None
    assert correction.text == expected
    assert correction.format == fmt
    assert correction.changed == (normalize(read) != expected)
    assert correction.confidence <= 0.9


AR = formats_for(["ar"])


@pytest.mark.parametrize(("read", "expected", "fmt"), [
    ("AD054J1", "AD054JI", "ar-mercosur"),  # 1 -> I where Mercosur wants its last letters
    ("ADO54JI", "AD054JI", "ar-mercosur"),  # O -> 0 where it wants digits
    ("A8C123", "ABC123", "ar-old"),  # 8 -> B in the old series' letters
    ("ABC12S", "ABC125", "ar-old"),
    ("382EMY", "382EMY", "ar-moto-old"),
    ("A12OEVP", "A120EVP", "ar-moto-mercosur"),
])
def test_argentine_reads_are_corrected_towards_argentine_formats(
        read: str, expected: str, fmt: str) -> None:
    correction = best_format_reading([(read, [0.9] * len(read))], AR)
    assert correction is not None
    assert correction.text == expected
    assert correction.format == fmt


def test_argentina_is_a_region_of_its_own() -> None:
    assert [f.name for f in AR] == ["ar-old", "ar-mercosur", "ar-moto-old", "ar-moto-mercosur"]
    assert {f.country for f in AR} == {"AR"}
    assert is_valid("ABC123", AR)
    assert is_valid("AD054JI", AR)
    assert not is_valid("ABC1234", AR)  # Brazil's old series, not Argentina's
    # Italy, France and Slovakia share the Mercosur mask; each region lists its own.
    assert matching_formats("AD054JI", formats_for(["ar", "it"])) == ["ar-mercosur", "it"]
    assert LprConfig(formats=("ar", "br")).formats == ("ar", "br")


def test_a_read_that_fits_costs_nothing() -> None:
    correction = best_format_reading([("ABC1D23", [0.8] * 7)], BR)
    assert correction is not None
    assert correction.cost == 0
    assert correction.substitutions == ()


def test_no_correction_when_nothing_fits() -> None:
    assert best_format_reading([("1234567", [0.9] * 7)], BR) is None  # 3 has no letter twin
    assert best_format_reading([("GWAGEN", [0.9] * 6)], DEFAULT_FORMATS) is None  # generic only
    assert best_format_reading([("A8C1234", [0.9] * 7)], BR, max_cost=0.1) is None
    assert best_format_reading([], BR) is None


def test_a_sure_read_with_a_cheap_fix_beats_a_doubtful_one_that_fits() -> None:
    correction = best_format_reading([("XBC1234", [0.5] * 7), ("A8C1234", [0.95] * 7)], BR)
    assert correction is not None
    assert correction.text == "ABC1234"
    assert correction.substitutions == ((1, "8", "B"),)


def test_confident_characters_cost_more_to_change() -> None:
    sure = best_format_reading([("A8C1234", [0.99] * 7)], BR)
    doubtful = best_format_reading([("A8C1234", [0.99, 0.1, 0.99, 0.99, 0.99, 0.99, 0.99])], BR)
    assert sure is not None
    assert doubtful is not None
    assert doubtful.cost < sure.cost


def test_separators_keep_their_confidences_aligned() -> None:
    correction = best_format_reading([("AB-12-CDE", [0.9, 0.9, 0.1, 0.9, 0.9, 0.1, 0.9, 0.9, 0.9])],
                                     formats_for(["uk"]))
    assert correction is not None
    assert correction.text == "AB12CDE"
    assert min(correction.char_confidences) == pytest.approx(0.9)


# --- distance and matching --------------------------------------------------------------------


def test_distance_is_cheap_for_confusables() -> None:
    assert distance("ABC1234", "ABC1234") == 0
    assert distance("ABC1234", "A8C1234") == pytest.approx(0.3)
    assert distance("ABC1234", "AXC1234") == 1
    assert distance("ABC1234", "ABC123") == 1
    assert distance("AB-C1234", "abc 1234") == 0
    assert distance("ABC1234", "XYZ9876", limit=1.0) == float("inf")
    assert confusable_cost("0", "O") == CONFUSABLES[("O", "0")] == 0.2


@given(st.text("ABO0DQ18S5Z2", max_size=8), st.text("ABO0DQ18S5Z2", max_size=8))
def test_distance_is_symmetric(a: str, b: str) -> None:
    assert distance(a, b) == pytest.approx(distance(b, a))


@given(st.text("ABXO0DQ18S5Z2", max_size=8), st.text("ABXO0DQ18S5Z2", max_size=8),
       st.sampled_from([0.0, 0.5, 1.0, 2.0]))
def test_the_limit_never_hides_a_distance_within_it(a: str, b: str, limit: float) -> None:
    full = distance(a, b)
    bounded = distance(a, b, limit=limit)
    if full <= limit:
        assert bounded == pytest.approx(full)
    else:
        assert bounded > limit


def test_exact_match_ignores_separators_in_the_known_plates() -> None:
    result = match("AB123CD", ["ab-123-cd", "XY999ZZ"])
    assert result.outcome == "exact"
    assert result.plate == "AB123CD"
    assert result.accepted


def test_fuzzy_match_takes_the_one_close_plate() -> None:
    result = match("A8C1234", ["ABC1234", "XYZ9876"])
    assert result.outcome == "fuzzy"
    assert result.plate == "ABC1234"
    assert result.distance == pytest.approx(0.3)
    assert result.accepted


def test_the_cheaper_confusable_wins() -> None:
    result = match("0B1234", ["OB1234", "DB1234"])  # 0/O 0.2 against 0/D 0.4
    assert result.outcome == "fuzzy"
    assert result.plate == "OB1234"


@pytest.mark.parametrize(("read", "known"), [
    ("KA05S5", ["KA0555", "KA05SS"]),  # one 5/S swap either way
    ("ABC1234", ["ABC1235", "ABC1224"]),  # one plain edit either way
    ("ABC123", ["ABC1234", "ABC1235"]),  # one missing character either way
])
def test_two_equally_close_plates_are_ambiguous(read: str, known: list[str]) -> None:
    result = match(read, known)
    assert result.outcome == "ambiguous"
    assert result.plate is None
    assert not result.accepted
    assert sorted(result.candidates) == sorted(known)


def test_a_margin_makes_nearly_equal_plates_ambiguous() -> None:
    known = ["ABC1Z34", "ABC1284"]
    assert match("ABC1234", known).outcome == "fuzzy"
    result = match("ABC1234", known, margin=0.8)
    assert result.outcome == "ambiguous"
    assert result.candidates == ("ABC1Z34", "ABC1284")


def test_no_match() -> None:
    assert match("ABC1234", ["XYZ9876"]).outcome == "none"
    assert match("", ["ABC1234"]).outcome == "none"
    assert match("ABC1234", []).outcome == "none"
    assert match("A8C1234", ["ABC1234"], max_distance=0).outcome == "none"
    assert match("ABX1234", ["ABC1234"], max_distance=0.5).outcome == "none"


def test_within_one_confusable() -> None:
    assert within_one_confusable("ABC1234", "ABC1234")
    assert within_one_confusable("A8C1234", "ABC1234")
    assert within_one_confusable("abc-1234", "ABC1234")
    assert not within_one_confusable("AXC1234", "ABC1234")
    assert not within_one_confusable("A8C12E4", "ABC1234")  # two swaps
    assert not within_one_confusable("ABC123", "ABC1234")


def test_the_networks_own_digit_stands_in_where_the_format_wants_one() -> None:
    """California's open 4 reads as L to every network tried; the mask NLLLNNN wants a digit
    there, and the network's likeliest digit there is the 4. Overruling the network leaves
    the character at half confidence at most, so no lane takes it unasked."""
    from gateway.core.plates import best_format_reading, formats_for

    confs = [0.47, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    alts = [[("L", 0.47), ("A", 0.46), ("4", 0.009), ("1", 0.001)]] + [
        [(ch, 1.0)] for ch in "TAZ530"]
    without = best_format_reading([("LTAZ530", confs)], formats_for(["us"]))
    assert without is None or without.text != "4TAZ530"  # L has no confusable digit
    fitted = best_format_reading([("LTAZ530", confs)], formats_for(["us"]),
                                 alternatives=[alts])
    assert fitted is not None
    assert fitted.text == "4TAZ530"
    assert fitted.char_confidences[0] <= 0.5
    assert fitted.substitutions == ((0, "L", "4"),)


def test_alternatives_that_do_not_line_up_with_the_read_are_ignored() -> None:
    from gateway.core.plates import best_format_reading, formats_for

    # "L-TAZ530" normalises to 7 characters from 8: its evidence no longer lines up.
    alts = [[("L", 0.5), ("4", 0.4)]] + [[(ch, 1.0)] for ch in "-TAZ530"]
    fitted = best_format_reading([("L-TAZ530", [0.5] + [1.0] * 7)], formats_for(["us"]),
                                 alternatives=[alts])
    assert fitted is None or fitted.text != "4TAZ530"
