"""The built-in demo corpus: real MNI152 anatomy, simulated subjects and sites.

Public API: `build_demo_corpus` (builder), `plan_cases`, `Site`, `DemoLayout`, `DemoSize` (plan),
`load_template_anatomy` (anatomy), `build_itk_external_case` (external).
"""
