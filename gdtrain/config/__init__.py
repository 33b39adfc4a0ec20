"""The config: from a YAML file and `--set` overrides to a resolved dict of plain values.

    yaml_file   reading YAML strictly (lines of every key), writing it
    overrides   --set a.b=value
    sections    the plain sections' schemas, the top-level layout, the component tables
    validate    resolve: every section checked, every default filled in
    locate      the file line (or --set) of a problem's key
    paths       path options made absolute by one rule
    loading     load: all of the above for one file
    identity    canonical JSON and the hash of a resolved config
    drift       what a resume may change
    schema      the JSON Schema of a config, generated from the tables
    components  the component tables listed (gdtrain components, docs/config-reference.md)

It imports the core (for the tables and the pure helpers), the data package (the dataset
table) and gdtrain.errors, and nothing above them.
"""
