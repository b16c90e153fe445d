import tomllib,glob,re,collections
import os
root=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
files=sorted(glob.glob(root+'/gateway/policy/rulebook/federal/*.toml'))
bases=[];facts={};conds={};types={};cats={};purps={};duties={}
for f in files:
    d=tomllib.load(open(f,'rb'))
    for b in d.get('basis',[]): b['_file']=f.split('/')[-1]; bases.append(b)
    for x in d.get('fact',[]): facts[x['id']]=x
    for x in d.get('condition',[]): conds[x['id']]=x
    for x in d.get('institution_type',[]): types[x['id']]=x
    for x in d.get('category',[]): cats[x['id']]=x
    for x in d.get('purpose',[]): purps[x['id']]=x
    for x in d.get('federal_duty',[]): duties[x['id']]=x
# defects per basis from the review's summary table
review=open(root+'/docs/reviews/2026-12-07-federal-rulebook.md').read()
table=review[review.index('## 12. Summary table'):]
defects={}
for line in table.splitlines():
    m=re.match(r'\| (\S+) \((\d+|vocabulary|\d+, inactive)\) \| \d+ \| ([^|]+) \|',line)
    if m: defects[m.group(1)]=m.group(3).strip()
# extra mapping for rows split or renamed
splits={'LACI-85f-3-ai':'LACI-85f-3','LAVS-50a-1-b-pc':'LAVS-50a-1-b','LAVS-153g-a':'LAVS-153g','LAVS-153g-b':'LAVS-153g','LAVS-153g-c':'LAVS-153g','LAI-6a-2-auth':'LAI-6a-2','LAI-6a-2-med':'LAI-6a-2'}
new_rows={'LACI-97a-1-a':'C-09 (missing basis, added)','LAVS-50a-1-a':'C-09 (missing basis, added)','LAVS-50a-1-a-pc':'C-09 (missing basis, added)','LACI-97a-1-bbis':'C-08 (missing basis, added)','LAVS-50a-1-bbis':'C-08 (missing basis, added)','LAA-97-1-bbis':'C-08 (missing basis, added)','LAI-3c-5':'C-07 (missing basis, added)','LAI-6a-2-med':'F-04, C-06 (added)'}
def active(b): return b.get('active', b['status']=='verified')
def cond_text(c):
    if c in conds:
        x=conds[c]
        how = ('built-in `%s`'%x['builtin']) if 'builtin' in x else ('all of %s'%', '.join('`%s`'%y for y in x['all_of'])) if 'all_of' in x else ('any of %s'%', '.join('`%s`'%y for y in x['any_of'])) if 'any_of' in x else 'fact `%s`'%x.get('fact')
        return '%s — %s'%(x['label_en'],how)
    if c in facts:
        x=facts[c]
        extra=(' (directory capacity `%s`)'%x['directory_capacity']) if x.get('directory_capacity') else ''
        return '%s — fact attested by the **%s**%s'%(x['label_en'],x['attested_by'],extra)
    return c
out=[]
W=out.append
W('''<!-- Issue 21. The per-basis sections below are generated from the rulebook files by the
script quoted at the end and then read line by line against ../shared/reference/legal.md; the
introduction, the readings and the open questions are written by hand. `tests/tidy/legal_review.rs`
fails when an active basis is missing here. -->

# Legal review of the federal rulebook (`federal-2026.12`)

This document is the jurists' map of the federal rulebook: for every basis, each element of the
article's text — who may disclose, to whom, on what trigger, for which purpose, which data, under
which conditions, with which obligations — and where the rulebook encodes it, or why it does not.
It answers the defect list of the review of 2026-12-07
([reviews/2026-12-07-federal-rulebook.md](reviews/2026-12-07-federal-rulebook.md), ids `A-01` … `H-07`);
each defect is fixed in the rulebook and shown by a scenario of `gateway/policy/scenarios/federal.toml`
named by its id (`cii policy test --scenarios gateway/policy/scenarios/federal.toml`).

Authority: the quoted texts and markers of legal.md — **[V]** the text directly supports the row,
**[I]** an inference jurists must confirm, **[U]** open. Rows resting on [U] are inactive; a row resting
on [I] is active only with `active = true` and an `active_because` naming the reading (the linter refuses
it otherwise: `INFERENCE_NOT_JUSTIFIED`). No active federal row rests on an [I] reading today: the [I]
elements that remain are conditions that *narrow* a row (LAI 68bis al. 1 as scope of al. 3), never ones
that open it.

## How the rulebook encodes an article

- **Who discloses, to whom**: institution types (`from`, `to`), declared in `00-core.toml` with their
  data-protection regime and the secrecy rule a denial cites (H-04). Types are data: a canton adds its own.
  The types added by this review: `ASYLUM`, `INTEGRATION`, `PRIVATE_DELEGATED` (the delegating act is
  required per institution), `PRIVATE`, `HEALTH_PROVIDER`, `PENSION_FUND`; `MIG` is now the migration
  authority of LEI 97 al. 1 only, `FP` the public vocational authority, `OTHER` the residual type that no
  basis reserved to authorities names.
- **Trigger**: how the exchange starts (`written_request`, `spontaneous_report`, `mandatory_report`,
  `case_access`, `bilateral_exchange`); it only selects candidate bases — a condition still checks the
  written request itself.
- **Conditions**: facts, each declaring **who attests it** (`01-vocabulary.toml`): the *sender*
  (the institution that submits), the *recipient*, the **discloser** (the weighing the law leaves to
  the body that "peut" disclose: no overriding private interest, the cost bearer unclear, the person
  informed, …) or the *network* (reference directory capacities, rulebook attestations). Built-in
  conditions do what a fact cannot: `case_by_case` (one person **and** a case reference: "cas d'espèce"
  excludes systematic transfers, H-03), `consent`/`written_consent` (the registry's consents, which
  narrow the categories), `reciprocity` and `cantonal_release` (rulebook attestations),
  `recipient_formal_release` (the recipient's formal release whatever its regime, H-02),
  `federal_duty` (the enumerated duties of federal acts, A-02), `no_medical_data`, `no_sensitive_data`.
  `all_of` / `any_of` combine them (e.g. the early-detection target group, LAI 3abis al. 2).
- **The discloser weighs** (H-01): in a push the sender is the discloser and attests its own weighing;
  in a pull the requester never attests what the discloser weighs (`FACT_NOT_ASSERTABLE`), and a pull is
  carried without review only by a basis marked `automatic_answer` — a **duty** to provide (LPGA 32 al. 1–2
  "fournissent", LAI 6a al. 2 "sont tenus", LEI 97 al. 1–2 "verpflichtet"). Every other pull waits for
  the holder's caseworker (`PENDING_REVIEW`), who attests or refuses with a reason code; the entry names
  the reviewer. The linter refuses `automatic_answer` on a basis with a discloser-attested condition.
- **Data**: categories, with their nLPD sensitivity and whether they belong to the medical file. The
  medical file never goes towards AC, AS, FP or MIG: for the AI's early-detection feedback that is the law
  (LAI 3c al. 4–5); towards AC a policy choice (legal.md §4.3.1, ORP counsellors do not see the medical
  file) [I]; towards AS, FP and MIG a policy choice narrower than LAI 68bis al. 3 (E-08).
- **Denials cite the secrecy rule** of the discloser's type (LPGA 33 for the social insurers; official
  secrecy and cantonal law for AS, FP, MIG; CP 321 for health providers) (H-04).
- **Individual case** (H-03): every transfer carries its case reference (logged); the gateway decides
  one person per transfer; a transfer of several persons (`persons > 1`) passes no federal basis
  (a property test checks it over random transfers).

## Open questions (recorded, not decided)

1. The presumed-interest branch of LACI 97a al. 4 let. b / LAVS 50a al. 4 let. b / LAA 97 al. 6 let. b
   ("s'il n'est pas possible d'obtenir son consentement, lorsque les circonstances permettent de présumer
   qu'il en va de l'intérêt de l'assuré"): not encoded; to be used restrictively [I].
2. Whether a **recurring** consent is "en l'espèce / im Einzelfall" (D-03): today `written_consent`
   accepts a recurring written consent that names the recipient and covers purpose and categories.
   A jurist who reads "en l'espèce" as "for this case only" replaces it by a one-off consent (the
   registry supports both; the gateway marks one-off consents used).
3. Scope of LACI 97a al. 1 let. abis (no purpose stated) [U]: the row stays inactive.
4. Whether an authenticated electronic request is "écrite" (legal.md §6.7): the rulebook treats the
   request text carried with the transfer, under the requester's signed token, as the written request;
   its SHA-256 is logged.
5. Whether LEI 97 al. 2 derogates from LPGA 33 for social insurers, SUVA included (E-07): insurers are
   removed from LEI-97-2; they disclose to migration under their own acts only.
6. The rest of LSE 34a al. 1 (excerpt truncated after let. b) and OASA 82–82f content
   (LEI-97-3-d, LACI-97a-1-bter).
7. Whether the scope of LAI 68bis al. 1 governs the al. 2–3 releases (A-08, [I]): encoded as the
   discloser-attested fact `ai_case_in_assessment`, which narrows.
8. Whether LPGA 32 al. 2 alone reaches AVAM data (E-09): AVAM categories travel under LSE 34a only.
9. The threshold of "cas d'une certaine importance" for PC reimbursements (LPC 26a, A-06): not encoded;
   only annual PC are reported.
10. A formal-law release for SUVA and PC under LAI 68bis al. 2 let. a (G-01, legal.md §6.2): LAI-68bis-2
    is inactive until one is found.
11. "motivée" (H-05): the rulebook checks that the written request is present; whether it is reasoned is
    part of the holder's review (a pull) or of the discloser's own reading (a push).
12. Consent for sensitive data (nLPD art. 6 al. 7 "exprès"): every consent the registry records is an
    explicit declaration naming each category and purpose (the registry refuses anything implied), so
    `consent` is express consent; sensitive categories under `consent` rows (LACI 85f al. 2) are therefore
    not refused by the linter. Sanctions (nLPD art. 5 let. c ch. 5) are a category of their own that no
    consent-based row releases.

## The bases, one by one
''')
order=[b for b in bases]
for b in order:
    act=active(b)
    cit=b['citation']
    W('### %s — %s%s'%(b['id'], cit['fr'], '' if act else ' (inactive)'))
    W('')
    W('- **Status**: %s; %s%s. File `%s`.'%(b['status'], 'active' if act else 'inactive', (' — '+b['active_because']) if b.get('active_because') else '', b['_file']))
    W('- **Text and reading**: %s'%b.get('note',''))
    W('- **Who discloses** (`from`): %s.'%', '.join('`%s` (%s)'%(t,types[t]['label_en']) for t in b['from']))
    W('- **To whom** (`to`): %s%s.'%(', '.join('`%s` (%s)'%(t,types[t]['label_en']) for t in b['to']), '; mutual' if b.get('mutual') else ''))
    W('- **Trigger**: %s.'%', '.join('`%s`'%t for t in b['triggers']))
    W('- **Purpose**: %s.'%'; '.join('`%s` (%s)'%(p,purps[p]['label_en']) for p in b['purposes']))
    W('- **Data**: %s.'%', '.join('`%s`%s'%(c, ' (sensitive%s)'%(', medical' if cats[c].get('medical') else '') if cats[c]['sensitivity']=='sensitive' else '') for c in b['categories']))
    if b.get('conditions'):
        W('- **Conditions** (all must hold):')
        for c in b['conditions']:
            W('  - `%s`: %s.'%(c,cond_text(c)))
    else:
        W('- **Conditions**: none (anonymised data; no person concerned).')
    if b.get('obligations'):
        W('- **Obligations**: %s.'%'; '.join('`%s` by the %s within %s days'%(o['kind'],o['owner'],o.get('due_days',30)) for o in b['obligations']))
    W('- **Pull without review**: %s.'%('yes — a duty to provide' if b.get('automatic_answer') else 'no — the holder\'s caseworker reviews'))
    key=splits.get(b['id'],b['id'])
    d=new_rows.get(b['id']) or defects.get(key)
    if d: W('- **Review defects fixed**: %s (see the scenarios named by these ids).'%d)
    W('')
W('## Federal duties to disclose (`[[federal_duty]]`)')
W('')
for k,x in duties.items():
    W('- **%s** (%s): from %s to %s, triggers %s, presupposes %s. %s'%(k,x['citation']['fr'],', '.join(x['from']),', '.join(x['to']),', '.join(x.get('triggers',[])) or 'any',', '.join(x.get('facts',[])) or 'nothing',x.get('note','')))
W('')
W('''## Regenerating

The per-basis sections are regenerated from the rulebook with the script
`docs/tools/legal_review.py` (Python 3.11, standard library only): `python3 docs/tools/legal_review.py > docs/legal-review.md`.
A change to a basis that is not reflected here fails `tests/tidy/legal_review.rs`.
''')
print('\n'.join(out))
