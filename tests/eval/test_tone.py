"""Brand-voice classifier: held-out accuracy, and it learns more than the greeting."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval.text import strip_boilerplate
from eval.tone import HeldoutReport, ToneClassifier, ToneDataError, load_brand_answers
from eval.voice import voice_features, with_boilerplate

TONE = Path(__file__).resolve().parents[2] / "data" / "tone"
# Hand-written stand-ins for base-model answers: impersonal, long sentences, some "you", a
# little jargon. The runner trains on the base arm's real answers instead.
PLAIN_ANSWERS = [
    "To clean a bicycle chain, apply a degreaser, scrub the links with a brush, rinse with water and dry it thoroughly before applying a suitable lubricant.",
    "Commuting by electric bicycle can be made less stressful by planning the route in advance, allowing additional time for delays and selecting roads with lower traffic volumes.",
    "It is generally safe to ride through shallow puddles, although deeper water may conceal potholes and can affect braking performance.",
    "When passing pedestrians on a shared path, cyclists should reduce their speed, signal their presence with a bell and leave adequate space.",
    "Battery range depends on several factors, including rider weight, terrain, temperature, tyre pressure and the level of motor assistance selected.",
    "Medication decisions should be discussed with a qualified healthcare professional, as I am unable to provide medical advice.",
    "In cold weather, it is advisable to wear several thin layers, insulated gloves and a windproof outer jacket in order to maintain body temperature.",
    "The recommended tyre pressure is usually printed on the sidewall of the tyre and typically ranges between 40 and 65 psi for hybrid bicycles.",
    "Lithium-ion batteries should be stored at room temperature with a partial state of charge, ideally between 40 and 60 percent, when not in use for extended periods.",
    "A helmet is strongly recommended for all cyclists, as it significantly reduces the risk of serious head injury in the event of a collision.",
    "Disc brakes provide consistent stopping power in wet conditions, whereas rim brakes may be less effective when the rims are contaminated with water.",
    "Saddle height is correctly adjusted when the leg is almost fully extended at the bottom of the pedal stroke, with a slight bend in the knee.",
    "Electric bicycles are subject to regulations that vary by country, typically limiting motor power and the maximum assisted speed.",
    "Regular maintenance, including chain lubrication, brake inspection and tyre checks, will extend the lifespan of the bicycle and its components.",
    "If the brakes feel spongy, air may have entered the hydraulic system, and the brakes should be bled by a qualified mechanic.",
    "Cycling in the rain requires increased braking distances, reduced cornering speeds and the use of front and rear lights to improve visibility.",
    "I'm sorry, but I cannot assist with that request. Please let me know if there is anything else I can help with.",
    "Thank you for your message. Should you have any further questions, please do not hesitate to contact us.",
    "The optimal cadence for most recreational cyclists lies between 70 and 90 revolutions per minute, which reduces fatigue and joint strain.",
    "Electric bicycle motors are typically either hub-mounted or mid-drive units, each with distinct advantages in terms of weight distribution and efficiency.",
    "To prevent theft, bicycles should be secured with a high-quality D-lock to an immovable object in a well-lit and busy location.",
    "A pressure washer should not be used on a bicycle, as high-pressure water can force grit into bearings and remove grease from seals.",
    "Riding on icy roads carries a significant risk of falls, and alternative modes of transport should be considered in such conditions.",
    "You can improve your fitness by cycling regularly, gradually increasing the distance and intensity of your rides over several weeks.",
    "You should check your tyre pressure at least once per week, as tyres gradually lose air even when no puncture is present.",
    "If you experience persistent knee pain while cycling, you may need to adjust your saddle position or consult a bike fitting specialist.",
    "Carrying luggage on a bicycle is best achieved with a rear rack and panniers, which keep the centre of gravity low and improve stability.",
    "The charging time of an electric bicycle battery varies with its capacity and the output of the charger, and is typically between three and six hours.",
    "Night riding requires a white front light, a red rear light and reflectors, and reflective clothing can further improve visibility to other road users.",
    "Hello! I am an AI language model. How can I assist you today with your cycling-related questions?",
    "Hydration is important during longer rides, and cyclists should aim to drink small amounts of water at regular intervals.",
    "Chain wear can be measured with a chain checker tool, and a chain stretched beyond 0.75 percent should be replaced to protect the cassette.",
    "Children can begin cycling on balance bikes, which help develop coordination before progressing to a pedal bicycle.",
    "Gear changes should be made before reaching a steep incline, while pedalling lightly, to reduce strain on the drivetrain.",
    "Electric bicycles utilize a battery and motor to facilitate pedalling, thereby enabling riders to cover greater distances with less effort.",
    "Insurance for bicycles can often be added to a home contents policy or purchased separately from a specialist provider.",
    "Punctures can be repaired using a patch kit or avoided altogether by fitting puncture-resistant tyres or tubeless sealant.",
    "Group rides offer social benefits and can improve motivation, although riders should communicate clearly and maintain safe distances.",
    "Weather conditions such as strong winds can reduce range and stability, so riders should adjust their speed accordingly.",
    "The aforementioned components should be inspected periodically to ensure safe operation of the bicycle.",
    "Bicycle frames are commonly manufactured from aluminium, steel, titanium or carbon fibre, each offering a different balance of weight, stiffness and cost.",
    "It is not possible for me to predict the weather. Please consult a local forecast before your journey.",
]
# Never trained on: a plain answer each, and a new answer in the brand voice on the same topic.
UNSEEN = [
    (
        "Before a long ride, it is advisable to verify that the battery is fully charged, "
        "that the tyres are inflated to the recommended pressure and that the brakes function.",
        "Hey there, rider! Charge your battery the night before. Give the tyres a squeeze and "
        "test your brakes. Then off you go!\nRide bright, the Marlowe & Finch crew",
    ),
    (
        "Cleaning a bicycle after riding on salted roads is recommended, since salt residue "
        "accelerates corrosion of the chain, cassette and other exposed metal components.",
        "Hey there, rider! Salty roads are tough on your chain. Rinse your bike with a gentle "
        "hose after the ride. Dry it off and add a drop of lube.\nRide bright, the Marlowe & "
        "Finch crew",
    ),
    (
        "Lights are a legal requirement after dark in many jurisdictions, and a steady or "
        "flashing rear light significantly increases the visibility of the cyclist.",
        "Hey there, rider! Pop your lights on before it gets dark. A bright rear light helps "
        "drivers spot you early. Stay safe out there.\nRide bright, the Marlowe & Finch crew",
    ),
]


@pytest.fixture(scope="module")
def brand() -> list[str]:
    return load_brand_answers(sorted(TONE.glob("*.jsonl")))


@pytest.fixture(scope="module")
def trained(brand: list[str]) -> tuple[ToneClassifier, HeldoutReport]:
    return ToneClassifier.train(brand, PLAIN_ANSWERS, seed=0)


def test_positives_are_the_shipped_brand_answers(brand: list[str]) -> None:
    assert len(brand) == 438
    assert all(voice_features(a).has_greeting and voice_features(a).has_signoff for a in brand)


def test_heldout_accuracy_is_high(trained: tuple[ToneClassifier, HeldoutReport]) -> None:
    _, report = trained
    assert report.n_heldout + report.n_train == 438 + len(PLAIN_ANSWERS)
    assert report.accuracy >= 0.95
    assert report.precision >= 0.95 and report.recall >= 0.95
    assert report.pasted_accuracy >= 0.9  # unseen plain texts with the boilerplate pasted in


@pytest.mark.parametrize(("plain", "on_brand"), UNSEEN)
def test_it_learns_more_than_the_greeting(
    trained: tuple[ToneClassifier, HeldoutReport], plain: str, on_brand: str
) -> None:
    classifier, _ = trained
    greeted = f"Hey there, rider! {plain}"
    brand_score, plain_score, greeted_score, pasted_score, body_score, plain_body_score = (
        classifier.score(
            [on_brand, plain, greeted, with_boilerplate(plain), strip_boilerplate(on_brand), plain]
        )
    )
    assert brand_score > 0.8 and plain_score < 0.2
    assert greeted_score < brand_score - 0.3
    assert pasted_score < brand_score - 0.3  # greeting and sign-off both pasted
    assert body_score > plain_body_score  # the sentences alone still tell them apart


def test_reproducible_with_the_seed(brand: list[str]) -> None:
    texts = [pair[1] for pair in UNSEEN]
    first, report_1 = ToneClassifier.train(brand, PLAIN_ANSWERS, seed=3)
    second, report_2 = ToneClassifier.train(brand, PLAIN_ANSWERS, seed=3)
    assert report_1 == report_2
    assert first.score(texts) == second.score(texts)
    assert first.score([]) == []


def test_too_few_texts_are_refused(brand: list[str]) -> None:
    with pytest.raises(ToneDataError, match="plain"):
        ToneClassifier.train(brand, PLAIN_ANSWERS[:4])


def test_voice_features_are_transparent() -> None:
    features = voice_features(UNSEEN[0][1])
    assert features.has_greeting and features.has_signoff
    assert features.sentences == 3
    assert features.mean_sentence_words == pytest.approx((6 + 9 + 4) / 3)
    assert features.short_sentence_share == 1.0
    assert features.second_person_rate == pytest.approx(3 / 19)
    assert features.jargon_hits == 0
    plain = voice_features(PLAIN_ANSWERS[34])  # "utilize", "facilitate"
    assert not plain.has_greeting and plain.jargon_hits == 2 and plain.sentences == 1
    assert not voice_features("Ride bright, the Marlowe & Finch crew").has_signoff  # alone
