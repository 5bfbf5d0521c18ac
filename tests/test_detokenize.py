"""Word tokens rejoined as prose, against originals: CoLA's own raw and PTB-style tokenized
releases, and WikiText-2 / PTB validation sentences whose originals were written out by hand (the
dataset's `<unk>`, `N` and, for PTB, removed punctuation kept: what the cleaning left of the text)."""

from __future__ import annotations

import gzip

import pytest

from research.tokenizers.detokenize import detokenize, lower_cased
from research.tokenizers.word import WordTokenizer

WIKITEXT = [  # WikiText-2 validation (cased): tokens -> the sentence as the article writes it
    ("The British instructed the Egyptians to abandon the Sudan , and sent General Charles Gordon to co @-@ <unk> "
     "the evacuation , but he was killed in January 1885 .",
     "The British instructed the Egyptians to abandon the Sudan, and sent General Charles Gordon to co-<unk> the "
     "evacuation, but he was killed in January 1885."),
    ('Other scenes are included in the video such as a conversation between Carey and Brenda K. Starr prior to her '
     'performance of " I Still Believe " .',
     'Other scenes are included in the video such as a conversation between Carey and Brenda K. Starr prior to her '
     'performance of "I Still Believe".'),
    ('Lead <unk> admitted that the term " <unk> " was unfamiliar to him , and it seems out of place compared to the '
     'vocabulary of his past work .',
     'Lead <unk> admitted that the term "<unk>" was unfamiliar to him, and it seems out of place compared to the '
     'vocabulary of his past work.'),
    ("Several days after the low dissipated , the remnant moisture from <unk> brought showers and thunderstorms to "
     "St. Croix where up to 1 in ( 25 @.@ 4 mm ) of rain fell .",
     "Several days after the low dissipated, the remnant moisture from <unk> brought showers and thunderstorms to "
     "St. Croix where up to 1 in (25.4 mm) of rain fell."),
    ("By late May the Germans had pushed to within 50 miles ( 80 km ) of Paris .",
     "By late May the Germans had pushed to within 50 miles (80 km) of Paris."),
    ("After this , the Australians continued their advance towards <unk> Creek , which was a further 1 mi "
     "( 1 @.@ 6 km ) to the southeast .",
     "After this, the Australians continued their advance towards <unk> Creek, which was a further 1 mi (1.6 km) "
     "to the southeast."),
    ("Over 26 @,@ 000 Australian personnel have served in Afghanistan .",
     "Over 26,000 Australian personnel have served in Afghanistan."),
    ("The <unk> cap sits on top of the tower , giving the mill an overall height of 45 feet ( 13 @.@ 72 m ) to the "
     "<unk> .",
     "The <unk> cap sits on top of the tower, giving the mill an overall height of 45 feet (13.72 m) to the <unk>."),
    ("The store has been selling fine men 's and women 's clothing since 1887 , when the store was first opened by "
     "Alex <unk> .",
     "The store has been selling fine men's and women's clothing since 1887, when the store was first opened by "
     "Alex <unk>."),
    ("The financial cost to the Australian government was calculated at £ <unk> @,@ <unk> @,@ <unk> .",
     "The financial cost to the Australian government was calculated at £<unk>,<unk>,<unk>."),
    ("On 20 July 1943 , <unk> took command of No. 2 Air Observer School ( <unk> ) , also operating Ansons , at Mount "
     "Gambier , South Australia .",
     "On 20 July 1943, <unk> took command of No. 2 Air Observer School (<unk>), also operating Ansons, at Mount "
     "Gambier, South Australia."),
    ("At the time of construction a time capsule was placed in one of the spikes of the sculpture , containing "
     "children 's poems and paintings , due to be opened circa 2300 .",
     "At the time of construction a time capsule was placed in one of the spikes of the sculpture, containing "
     "children's poems and paintings, due to be opened circa 2300."),
    ("The invasions toppled the 250 @-@ year @-@ old Pagan Empire , and the <unk> army seized Pagan territories in "
     "present @-@ day <unk> , <unk> and northern Burma to <unk> .",
     "The invasions toppled the 250-year-old Pagan Empire, and the <unk> army seized Pagan territories in "
     "present-day <unk>, <unk> and northern Burma to <unk>."),
    ('Carey once again changed to a beige ensemble similar to her first outfit before performing her debut single , '
     '" Vision of Love " .',
     'Carey once again changed to a beige ensemble similar to her first outfit before performing her debut single, '
     '"Vision of Love".'),
    ("In 1989 , the <unk> Ranch agreed to rest two grazing <unk> totaling 50 @,@ 000 acres ( 20 @,@ 000 ha ) to "
     "restore critical stream <unk> and mountain pastures .",
     "In 1989, the <unk> Ranch agreed to rest two grazing <unk> totaling 50,000 acres (20,000 ha) to restore "
     "critical stream <unk> and mountain pastures."),
    ("A version recorded on 13 May that year at Sony Music Studios , New York , appeared on Starr 's VH1 <unk> live "
     "album and video , released in October 1998 .",
     "A version recorded on 13 May that year at Sony Music Studios, New York, appeared on Starr's VH1 <unk> live "
     "album and video, released in October 1998."),
    ("As a result , some of the joints were re @-@ <unk> , with equipment put in place to prevent excessive "
     "movement .",
     "As a result, some of the joints were re-<unk>, with equipment put in place to prevent excessive movement."),
    ("This structure was built during World War II but completion was delayed due to war @-@ induced steel "
     "shortages .",
     "This structure was built during World War II but completion was delayed due to war-induced steel shortages."),
    ("She <unk> a short mini @-@ skirt , alongside a <unk> white <unk> and loose golden <unk> .",
     "She <unk> a short mini-skirt, alongside a <unk> white <unk> and loose golden <unk>."),
    ("This allowed <unk> to re @-@ evaluate the situation and to issue new orders for the advance towards the <unk> "
     "and <unk> Rivers .",
     "This allowed <unk> to re-evaluate the situation and to issue new orders for the advance towards the <unk> and "
     "<unk> Rivers."),
    ("The ships were also fitted with 24 @-@ power <unk> <unk> <unk> .",
     "The ships were also fitted with 24-power <unk> <unk> <unk>."),
    ("He has edited 4 volumes and co @-@ edited 3 more .", "He has edited 4 volumes and co-edited 3 more."),
    ("Level III : I @-@ 635 , ten regular lanes , five going each way , and four <unk> lanes ( two going each way ) "
     "separated by barriers",
     "Level III: I-635, ten regular lanes, five going each way, and four <unk> lanes (two going each way) separated "
     "by barriers"),
    ('His father , who was raised in <unk> , County Down , Northern Ireland , is from " a very working @-@ class " '
     'Protestant background .',
     'His father, who was raised in <unk>, County Down, Northern Ireland, is from "a very working-class" Protestant '
     'background.'),
    ("The tribe 's spokesperson , Lisa <unk> , stated the tribe <unk> only members with certified one @-@ quarter "
     "American Indian blood .",
     "The tribe's spokesperson, Lisa <unk>, stated the tribe <unk> only members with certified one-quarter American "
     "Indian blood."),
    ("The fees ranged from $ 50 to a high of $ 110 @,@ 000 for rush hours .",
     "The fees ranged from $50 to a high of $110,000 for rush hours."),
    ('In a post to his blog , Blythe explained that he met the <unk> family in private after the trial , and '
     'promised them to be " a spokesperson for safer shows " .',
     'In a post to his blog, Blythe explained that he met the <unk> family in private after the trial, and promised '
     'them to be "a spokesperson for safer shows".'),
    ("She displaced 15 @,@ 200 long tons ( 15 @,@ 400 t ) at normal load .",
     "She displaced 15,200 long tons (15,400 t) at normal load."),
    ("Homarus gammarus , known as the European lobster or common lobster , is a species of <unk> lobster from the "
     "eastern Atlantic Ocean , Mediterranean Sea and parts of the Black Sea .",
     "Homarus gammarus, known as the European lobster or common lobster, is a species of <unk> lobster from the "
     "eastern Atlantic Ocean, Mediterranean Sea and parts of the Black Sea."),
    ('In life , the lobsters are blue , only becoming " lobster red " on cooking .',
     'In life, the lobsters are blue, only becoming "lobster red" on cooking.'),
    ("Homarus gammarus is a large <unk> , with a body length up to 60 centimetres ( 24 in ) and weighing up to "
     "5 – 6 kilograms ( 11 – 13 lb ) , although the lobsters caught in lobster pots are usually 23 – 38 cm "
     "( 9 – 15 in ) long and weigh 0 @.@ 7 – 2 @.@ 2 kg ( 1 @.@ 5 – 4 @.@ 9 lb ) .",
     "Homarus gammarus is a large <unk>, with a body length up to 60 centimetres (24 in) and weighing up to 5–6 "
     "kilograms (11–13 lb), although the lobsters caught in lobster pots are usually 23–38 cm (9–15 in) long and "
     "weigh 0.7–2.2 kg (1.5–4.9 lb)."),
    ('The larger one is the " <unk> " , and has rounded <unk> used for crushing prey ; the other is the " cutter " , '
     'which has sharp inner edges , and is used for holding or tearing the prey .',
     'The larger one is the "<unk>", and has rounded <unk> used for crushing prey; the other is the "cutter", which '
     'has sharp inner edges, and is used for holding or tearing the prey.'),
    ("The two species can be distinguished by a number of characteristics :",
     "The two species can be distinguished by a number of characteristics:"),
]

PTB = [  # PTB validation (lower-cased, punctuation removed by Mikolov's cleaning): tokens -> original casing
    ("<unk> <unk> watching abc 's monday night football can now vote during <unk> for the greatest play in N years "
     "from among four or five <unk> <unk>",
     "<unk> <unk> watching ABC's Monday Night Football can now vote during <unk> for the greatest play in N years "
     "from among four or five <unk> <unk>"),
    ("and the new syndicated reality show hard copy records viewers ' opinions for possible airing on the next "
     "day 's show",
     "And the new syndicated reality show Hard Copy records viewers' opinions for possible airing on the next day's "
     "show"),
    ("we 've been spending a lot of time in los angeles talking to tv production people says mike parks president "
     "of call interactive which supplied technology for both abc sports and nbc 's consumer minutes",
     "We've been spending a lot of time in Los Angeles talking to TV production people says Mike Parks president of "
     "Call Interactive which supplied technology for both ABC Sports and NBC's Consumer Minutes"),
    ("formed in august the venture <unk> at&t 's newly expanded N service with N <unk> computers in american "
     "express 's omaha neb. service center",
     "Formed in August the venture <unk> AT&T's newly expanded N service with N <unk> computers in American "
     "Express's Omaha Neb. service center"),
    ("billing is included in a caller 's regular phone bill", "Billing is included in a caller's regular phone bill"),
    ("before callers of N numbers would just listen and not talk or they 'd vote yes or no by calling one of two "
     "numbers",
     "Before callers of N numbers would just listen and not talk or they'd vote yes or no by calling one of two "
     "numbers"),
    ("for several years turner broadcasting system 's cable news network has invited viewers to respond <unk> to "
     "<unk> issues should the u.s. military intervene in panama but even the hottest <unk> on <unk> <unk> only "
     "about N calls",
     "For several years Turner Broadcasting System's Cable News Network has invited viewers to respond <unk> to "
     "<unk> issues should the U.S. military intervene in Panama but even the hottest <unk> on <unk> <unk> only "
     "about N calls"),
    ("capital cities\\/abc inc. cbs inc. and general electric co. 's national broadcasting co. unit are expected to "
     "announce soon a joint campaign to raise awareness about <unk>",
     "Capital Cities/ABC Inc. CBS Inc. and General Electric Co.'s National Broadcasting Co. unit are expected to "
     "announce soon a joint campaign to raise awareness about <unk>"),
    ("people in the phone business call this technology N <unk>",
     "People in the phone business call this technology N <unk>"),
    ("the newest uses of the <unk> technology demonstrate the growing variety of applications",
     "The newest uses of the <unk> technology demonstrate the growing variety of applications"),
    ("other network applications have very different goals", "Other network applications have very different goals"),
    ("jackets may be sold next", "Jackets may be sold next"),
    ("she would n't say what the premium is but it 's believed to be about N N above regular <unk> rates",
     "She wouldn't say what the premium is but it's believed to be about N N above regular <unk> rates"),
    ("and we were able to attract some new advertisers because this is something new",
     "And we were able to attract some new advertisers because this is something new"),
    ("callers will be sent educational booklets and the call 's modest cost will be an immediate method of raising "
     "money",
     "Callers will be sent educational booklets and the call's modest cost will be an immediate method of raising "
     "money"),
    ("profit from the calls goes to charity but abc sports also uses the calls as a sales tool after <unk> callers "
     "for voting frank <unk> offers a football <unk> for $ N and N N of callers stay on the line to order it",
     "Profit from the calls goes to charity but ABC Sports also uses the calls as a sales tool after <unk> callers "
     "for voting Frank <unk> offers a football <unk> for $N and N N of callers stay on the line to order it"),
    ("viewers can call a N number for additional advice which will be tailored to their needs based on the numbers "
     "they <unk> press one if you 're pregnant etc",
     "Viewers can call a N number for additional advice which will be tailored to their needs based on the numbers "
     "they <unk> press one if you're pregnant etc"),
    ("mr. parks of call interactive says tv executives are considering the use of N numbers for talk shows game "
     "shows news and opinion surveys",
     "Mr. Parks of Call Interactive says TV executives are considering the use of N numbers for talk shows game "
     "shows news and opinion surveys"),
]


def shares(pairs, restore_case):
    out = [detokenize(tokens.split(), restore_case) for tokens, _ in pairs]
    exact = sum(o == ref for o, (_, ref) in zip(out, pairs)) / len(pairs)
    caseless = sum(o.lower() == ref.lower() for o, (_, ref) in zip(out, pairs)) / len(pairs)
    return exact, caseless


def test_wikitext_sentences_are_rejoined_exactly():
    exact, _ = shares(WIKITEXT, restore_case=False)  # a cased corpus: capitals are left as they are
    assert exact == 1.0, [detokenize(t.split(), False) for t, r in WIKITEXT if detokenize(t.split(), False) != r]


def test_ptb_sentences_rejoined_up_to_the_capitals_of_names():
    exact, caseless = shares(PTB, restore_case=True)
    assert caseless == 1.0, [detokenize(t.split()) for t, r in PTB if detokenize(t.split()).lower() != r.lower()]
    # names lower-cased by the cleaning cannot come back: exact only where a sentence has none
    assert exact == pytest.approx(10 / 18)


def test_cola_tokenized_release_against_its_raw_release(shared_data):
    """CoLA ships each sentence raw and PTB-tokenized (lower-cased): the tokens rejoined should be the raw
    sentence, save the capitals of names."""
    aligned = []
    for part in ("in_domain_dev", "out_of_domain_dev"):
        groups: dict[tuple, list[list[str]]] = {}  # (source, label) -> [raw sentences, tokenized sentences]
        for i, kind in enumerate(("raw", "tokenized")):
            for line in gzip.open(shared_data / "cola" / kind / f"{part}.tsv.gz", "rt", encoding="utf-8"):
                cols = line.rstrip("\n").split("\t")
                groups.setdefault((cols[0], cols[1]), [[], []])[i].append(cols[3])
        for raw, tokenized in groups.values():
            if len(raw) == len(tokenized):  # in order within a group; a group whose counts differ is left out
                aligned += list(zip(tokenized, raw))
    exact, caseless = shares(aligned, restore_case=True)
    assert len(aligned) >= 1000
    assert caseless >= 0.995 and exact >= 0.6  # measured: see the README (Output people can read)


def test_word_tokenizer_decodes_through_the_rules():
    ptb = WordTokenizer(["the", "cat", "'s", "i", "'m", "n't", "do", "N", "$", "sure", "fine", ".", "know"],
                        split="whitespace")
    assert ptb.restore_case and lower_cased(ptb.words)
    text = "i 'm sure the cat 's fine . i do n't know $ N"
    assert ptb.decode(ptb.encode(text)) == "I'm sure the cat's fine. I don't know $N"
    assert ptb.display(ptb.encode(text), detokenize=False) == "i 'm sure the cat 's fine . i do n't know $ N"
    cased = WordTokenizer(["The", "iPhone", "cat", "."], split="whitespace")
    assert not cased.restore_case and cased.decode(cased.encode("iPhone cat .")) == "iPhone cat."


def test_quotes_and_speech_tags():
    assert detokenize('" hi ! " said tom . " yes . " she left .'.split()) == '"Hi!" said tom. "Yes." She left.'
    assert detokenize("`` hi , '' he said -LRB- softly -RRB- .".split()) == "“Hi,” he said (softly)."
