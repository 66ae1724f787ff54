"""Operations: metrics (`metrics`), structured logs (`logs`), readiness (`ready`) and several API worker
processes on one port (`workers`). Nothing here decides access or releases anything; labels and log fields
carry route templates, status codes, decisions, stage names, dataset names and error codes only, never SQL,
parameters, results, keys or identities.
"""
